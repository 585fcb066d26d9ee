/* YAML documents as jansson values.
 *
 * Used where YAML is data with a JSON shape (kubeconfig files, manifests):
 * mappings become objects, sequences arrays, and plain scalars are typed the
 * YAML 1.2 core-schema way (null, true/false, integers, floats; everything
 * else, and every quoted scalar, a string). Anchors and aliases are refused:
 * none of our inputs need them and they make "billion laughs" inputs cheap.
 */
#ifndef SBX_YAML_H
#define SBX_YAML_H

#include <jansson.h>
#include <stddef.h>

/* Parses the first document of data[0..len). Returns a new reference (an
 * empty document gives json null), or NULL with "line L, column C: what" in
 * err. max_depth bounds nesting; the input size bounds everything else. */
json_t *sbx_yaml_load(const char *data, size_t len, unsigned max_depth, char *err, size_t err_size);

/* Reads and parses a file of at most max_bytes; err names the file. */
json_t *sbx_yaml_load_file(const char *path, size_t max_bytes, char *err, size_t err_size);

#endif
