{{/* The release's base name: the release name, or <release>-sbx when it does not
contain "sbx", cut to fit the 63 characters of a label value. */}}
{{- define "sbx.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sbx.operator.name" -}}
{{- printf "%s-operator" (include "sbx.fullname" .) -}}
{{- end -}}

{{- define "sbx.operator.serviceAccount" -}}
{{- default (include "sbx.operator.name" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The labels that select the operator's pods. */}}
{{- define "sbx.operator.selector" -}}
app.kubernetes.io/name: sbx-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sbx.operator.labels" -}}
{{ include "sbx.operator.selector" . }}
app.kubernetes.io/part-of: sbx
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sbx.ingress.name" -}}
{{- printf "%s-ingress" (include "sbx.fullname" .) -}}
{{- end -}}

{{/* The labels that select the ingress's pods; app.kubernetes.io/name is what
operator.ingressSelector names by default, so sandboxes admit these pods. */}}
{{- define "sbx.ingress.selector" -}}
app.kubernetes.io/name: sbx-ingress
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sbx.ingress.labels" -}}
{{ include "sbx.ingress.selector" . }}
app.kubernetes.io/part-of: sbx
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
