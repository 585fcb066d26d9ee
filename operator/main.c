/* sbx-operator: reconciles Sandbox objects into a Pod, a Service and a NetworkPolicy each.
 *
 * main() only parses the configuration, wires the modules and runs the loop.
 * This build has the configuration surface only; the reconciler arrives with its own
 * issue, and until then the program says so and exits 1.
 */
#include "sbx/config.h"
#include "sbx/log.h"
#include "sbx/version.h"

#include <stdio.h>

int main(int argc, char **argv)
{
	struct sbx_config cfg = {
		.program = "sbx-operator",
		.summary =
			"reconciles Sandbox objects into a Pod, a Service and a NetworkPolicy each.",
		.env_prefix = "SBX_OPERATOR_",
	};
	int rc = sbx_config_load(&cfg, argc, argv);

	if (rc)
		return rc > 0 ? 0 : 2;
	if (cfg.argi < argc) {
		fprintf(stderr, "sbx-operator: unexpected argument '%s' (see --help)\n",
			argv[cfg.argi]);
		sbx_config_release(&cfg);
		return 2;
	}
	sbx_log_error("the reconciler is not part of this build yet",
		      SBX_LS("version", SBX_VERSION));
	sbx_config_release(&cfg);
	return 1;
}
