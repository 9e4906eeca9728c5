{{/* Resource names: the release name unless overridden (release "slim-control" → slim-control). */}}
{{- define "slim-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slim-controller.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slim-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slim-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slim-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "slim-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "slim-controller.serviceAccountName" -}}
{{- default (include "slim-controller.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "slim-controller.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "slim-controller.southPort" -}}
{{- .Values.config.southbound.httpPort | default 50052 | int }}
{{- end }}

{{- define "slim-controller.northPort" -}}
{{- (.Values.config.northbound | default dict).httpPort | default 50051 | int }}
{{- end }}

{{- define "slim-controller.northEnabled" -}}
{{- if ne ((.Values.config.northbound | default dict).enabled | toString) "false" }}true{{ end }}
{{- end }}

{{/* The controller config file exactly as slim-controller reads it. */}}
{{- define "slim-controller.config" -}}
{{- $file := dict "config" .Values.config "spire" (dict "enabled" .Values.spire.enabled "trustedDomains" (.Values.spire.trustedDomains | default list)) }}
{{- tpl (toYaml $file) . }}
{{- end }}
