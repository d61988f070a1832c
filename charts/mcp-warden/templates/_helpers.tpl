{{- define "mcp-warden.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}{{ end }}
{{- end -}}

{{- define "mcp-warden.selectorLabels" -}}
app.kubernetes.io/name: mcp-warden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end -}}

{{- define "mcp-warden.labels" -}}
{{ include "mcp-warden.selectorLabels" . }}
app.kubernetes.io/part-of: mcp-warden
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mcp-warden.image" -}}
{{- if .Values.image.digest }}{{ .Values.image.repository }}@{{ .Values.image.digest }}{{ else }}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{ end }}
{{- end -}}

{{- define "mcp-warden.webhookAnnotations" -}}
{{- if .Values.certManager.enabled }}
cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "mcp-warden.fullname" . }}-webhook-cert
{{- else }}
mcp.warden.dev/ca-injected-by: operator
{{- end }}
{{- end -}}

{{- /* Fails the render when values contradict each other (the schema checks each value alone). */ -}}
{{- define "mcp-warden.validate" -}}
{{- $v := .Values.webhook.verifyTimeout -}}
{{- $ms := 0 -}}
{{- if hasSuffix "ms" $v }}{{ $ms = trimSuffix "ms" $v | atoi }}{{ else }}{{ $ms = mul (trimSuffix "s" $v | atoi) 1000 }}{{ end -}}
{{- if ge (int64 $ms) (mul .Values.webhook.timeoutSeconds 1000) -}}
{{- fail (printf "webhook.verifyTimeout (%s) must be below webhook.timeoutSeconds (%vs): the API server gives up on the webhook first otherwise" $v .Values.webhook.timeoutSeconds) -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if lt (float64 .Values.scale.kubeAPIBurst) (float64 .Values.scale.kubeAPIQPS) -}}
{{- fail (printf "scale.kubeAPIBurst (%v) must be at least scale.kubeAPIQPS (%v)" .Values.scale.kubeAPIBurst .Values.scale.kubeAPIQPS) -}}
{{- end -}}
{{- end -}}
