/* Fuzz target: YAML to JSON (kubeconfig files and manifests). */
#include "sbx/yaml.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	json_t *v = sbx_yaml_load((const char *)data, size, 32, err, sizeof(err));

	json_decref(v);
	return 0;
}
