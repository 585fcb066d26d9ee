#!/usr/bin/env bash
# Renders manifests/operator/operator.yaml from the Helm chart (helm/sbx) with
# its default values, release "sbx" in namespace sbx-system, so that the plain
# manifests and the chart cannot drift apart. With --check, compares instead
# of writing, and fails when the file is not what the chart renders.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=$here/manifests/operator/operator.yaml
helm="${HELM:-$("$here/scripts/k8s-toolchain.sh")/helm}"

render() {
	cat <<'HEAD'
# sbx-operator and sbx-ingress: their namespace, identities, least-privilege
# RBAC, Deployments and Services.
# kubectl apply -f manifests/crd/ -f manifests/operator/
# Generated from the Helm chart by scripts/manifests.sh: edit helm/sbx, not this
# file. docs/operator.md and docs/ingress.md list every flag; set them in the
# containers' args.
apiVersion: v1
kind: Namespace
metadata:
  name: sbx-system
  labels: {app.kubernetes.io/part-of: sbx}
HEAD
	# The chart's CRD is a link to manifests/crd/; helm says so on stderr.
	"$helm" template sbx "$here/helm/sbx" --namespace sbx-system 2> >(grep -v 'symbolic link' >&2) |
		grep -v -e '^# Source: ' -e 'app.kubernetes.io/managed-by: Helm' -e 'helm.sh/chart: ' |
		sed -e '/^$/d'
}

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
render >"$rendered"
if [[ ${1:-} == --check ]]; then
	if ! diff -u "$out" "$rendered"; then
		echo "manifests.sh: $out is not what helm/sbx renders; run scripts/manifests.sh" >&2
		exit 1
	fi
	exit 0
fi
cp "$rendered" "$out"
