/* sbx-ingress: routes /sandboxes/<id>/port/<port>/... to sandbox pods over HTTP/1.1 and HTTP/2.
 *
 * main() only parses the configuration, wires the modules and runs the loop.
 * This build has the configuration surface only; the gateway arrives with its own
 * issue, and until then the program says so and exits 1.
 */
#include "sbx/config.h"
#include "sbx/log.h"
#include "sbx/version.h"

#include <stdio.h>

int main(int argc, char **argv)
{
	struct sbx_config cfg = {
		.program = "sbx-ingress",
		.summary =
			"routes /sandboxes/<id>/port/<port>/... to sandbox pods over HTTP/1.1 and HTTP/2.",
		.env_prefix = "SBX_INGRESS_",
	};
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc) {
		sbx_config_release(&cfg);
		return rc > 0 ? 0 : 2;
	}
	if (cfg.argi < argc) {
		fprintf(stderr, "sbx-ingress: unexpected argument '%s' (see --help)\n",
			argv[cfg.argi]);
		sbx_config_release(&cfg);
		return 2;
	}
	sbx_log_error("the gateway is not part of this build yet", SBX_LS("version", SBX_VERSION));
	sbx_config_release(&cfg);
	return 1;
}
