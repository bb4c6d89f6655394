{{/* Kubernetes labels. Selectors hold only name and instance: they are immutable. */}}

{{/* Usage: {{ include "django-service.labels.standard" . | nindent 4 }} */}}
{{- define "django-service.labels.standard" -}}
helm.sh/chart: {{ include "django-service.names.chart" . }}
{{ include "django-service.labels.matchLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: django-mesh
{{- end -}}

{{/* Usage: {{ include "django-service.labels.matchLabels" . | nindent 6 }} */}}
{{- define "django-service.labels.matchLabels" -}}
app.kubernetes.io/name: {{ include "django-service.names.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Usage: {{ include "django-service.labels.component" (dict "component" "migration" "context" $) | nindent 4 }} (labels of a pod the Service must NOT select: no name label) */}}
{{- define "django-service.labels.component" -}}
helm.sh/chart: {{ include "django-service.names.chart" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: {{ include "django-service.names.name" .context }}
{{- end -}}
