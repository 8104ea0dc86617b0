{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "entra-callout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release already carries the chart's name. */}}
{{- define "entra-callout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "entra-callout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "entra-callout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "entra-callout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "entra-callout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "entra-callout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "entra-callout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "entra-callout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "entra-callout.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "entra-callout.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{- define "entra-callout.secretProviderClass" -}}
{{- default (include "entra-callout.fullname" .) .Values.seeds.csi.secretProviderClass }}
{{- end }}

{{/* The service's configuration file. Paths are where the Deployment mounts things. */}}
{{- define "entra-callout.config" -}}
# Rendered by the entra-callout Helm chart.
nats:
  url: {{ .Values.nats.url | quote }}
  user: {{ .Values.nats.user | quote }}
  password_file: /etc/entra-callout/keys/nats-password
  queue_group: {{ .Values.nats.queueGroup | quote }}
  callout_account: {{ .Values.nats.calloutAccount | quote }}
  system_account: {{ .Values.nats.systemAccount | quote }}
callout:
  issuer_seed_file: /etc/entra-callout/keys/issuer.nk
  {{- if .Values.seeds.xkey }}
  xkey_seed_file: /etc/entra-callout/keys/xkey.nk
  {{- end }}
  max_ttl: {{ .Values.callout.maxTtl | quote }}
  max_concurrency: {{ .Values.callout.maxConcurrency }}
  request_leeway: {{ .Values.callout.requestLeeway | quote }}
  drain_timeout: {{ .Values.callout.drainTimeout | quote }}
  token_cache_size: {{ int .Values.callout.tokenCacheSize }}
  server_timeout: {{ .Values.callout.serverTimeout | quote }}
  {{- with .Values.callout.keyWait }}
  key_wait: {{ . | quote }}
  {{- end }}
  {{- if .Values.callout.verifyRequestSignature }}
  verify_request_signature: true
  {{- end }}
providers:
{{ toYaml .Values.providers | indent 2 }}
policies: /etc/entra-callout/policies
log:
  format: {{ .Values.log.format }}
  level: {{ .Values.log.level | quote }}
admin:
  listen: "0.0.0.0:{{ .Values.admin.port }}"
{{- end }}
