{{/* Resource names: the release name unless overridden (release "slim" → slim, slim-0, ...). */}}
{{- define "slim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slim.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "slim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slim.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slim.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "slim.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node
{{- end }}

{{- define "slim.serviceAccountName" -}}
{{- default (include "slim.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "slim.image" -}}
{{- printf "%s:%s" .Values.slim.image.repository (.Values.slim.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The node config file exactly as slim-node reads it. */}}
{{- define "slim.config" -}}
{{- tpl (toYaml .Values.slim.config) . }}
{{- end }}
