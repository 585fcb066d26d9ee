/* A command's whole process tree, to signal it all: a child that calls
 * setsid leaves its process group, and one whose parent has ended is
 * reparented to the supervisor (the agent is the sandbox's subreaper), so
 * neither the group nor parentage finds everything a command started.
 *
 * Each command carries a tag in its environment (SBX_TREE=tag), which its
 * descendants inherit; the tree is every process whose environment has the
 * tag (or a tag that starts with it followed by '.', the commands of a
 * session), every descendant of its root by parentage, and its root's
 * process group. A process that clears its environment and leaves its
 * group and parent at once escapes; nothing short of a cgroup, which a
 * sandbox's pod does not give its agent, finds it. */
#ifndef SBX_AGENT_TREE_H
#define SBX_AGENT_TREE_H

#include <sys/types.h>

#define TREE_ENV     "SBX_TREE"
#define TREE_TAG_MAX 48

/* A new tag (hex), NUL-terminated, in out[TREE_TAG_MAX]. */
void tree_new_tag(char *out);

/* Sends sig to the tree of tag (NULL: none) and root (0: none): the number
 * of processes signalled. With SIGKILL it goes round until no live member
 * is left (a bounded number of times), so that forks in flight are caught. */
int tree_signal(const char *tag, pid_t root, int sig);

#endif
