/* `sbx-agent install DIR`: the agent copies its own bundle into DIR.
 *
 * The bundle (scripts/bundle-agent.sh) is a folder PREFIX with bin/sbx-agent
 * and lib/ holding every library and the loader, which the binary finds at
 * PREFIX. The image sbx.local/sbx-agent holds it at /opt/sbx; a sandbox pod's
 * init container runs `/opt/sbx/bin/sbx-agent install /sbx` with an emptyDir
 * at /sbx, and the main container mounts that emptyDir at /opt/sbx. The image
 * needs no shell and no cp.
 */
#ifndef SBX_AGENT_INSTALL_H
#define SBX_AGENT_INSTALL_H

/* Copies the folder two levels above the running binary (PREFIX; found
 * through /proc/self/exe, or argv0 when that is missing) into dest,
 * which must exist: regular files (mode kept; each written under a temporary
 * name and renamed into place), symbolic links and folders. Returns 0 or a
 * negative errno; the message names the file that failed. */
int install_bundle(const char *argv0, const char *dest);

#endif
