/* Fuzz target: the YAML config-file loader (a file an operator writes). The
 * input becomes the --config file through a memfd; every outcome must be a
 * clean load or a clean error. */
#define _GNU_SOURCE
#include "sbx/config.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static char *listen_addr;
static long count;
static bool flag;
static struct sbx_strv names;

static int devnull = -1;
static int saved_stderr = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	devnull = open("/dev/null", O_WRONLY);
	saved_stderr = dup(2);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct sbx_opt opts[] = {
		{ .name = "listen", .type = SBX_OPT_STRING, .dest = &listen_addr, .help = "" },
		{ .name = "count",
		  .type = SBX_OPT_INT,
		  .dest = &count,
		  .help = "",
		  .min = 1,
		  .max = 9 },
		{ .name = "flag", .type = SBX_OPT_BOOL, .dest = &flag, .help = "" },
		{ .name = "names", .type = SBX_OPT_LIST, .dest = &names, .help = "" },
	};
	struct sbx_config cfg = { .program = "fuzz",
				  .summary = "",
				  .env_prefix = "SBX_FUZZ_",
				  .opts = opts,
				  .n_opts = 4,
				  .max_list_items = 16 };
	char path[64];
	int fd = memfd_create("config", 0);

	if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	listen_addr = "default";
	/* Error messages are the expected output for most inputs; silence them
	 * for the call only, so libFuzzer's own reports still reach stderr. */
	fflush(stderr);
	dup2(devnull, 2);
	sbx_config_load(&cfg, 3, (char *[]){ "fuzz", "--config", path, NULL });
	fflush(stderr);
	dup2(saved_stderr, 2);
	sbx_config_release(&cfg);
	close(fd);
	return 0;
}
