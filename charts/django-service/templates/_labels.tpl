{{/* Kubernetes labels. Every object carries the same set; a pod the Service must not select (the
     migration Job's) drops only the name and adds its component. Selectors hold only name and
     instance: they are immutable. */}}

{{/* Usage: {{ include "django-service.labels.standard" . | nindent 4 }} */}}
{{- define "django-service.labels.standard" -}}
{{ include "django-service.labels.matchLabels" . }}
{{ include "django-service.labels.release" . }}
{{- end -}}

{{/* Usage: {{ include "django-service.labels.matchLabels" . | nindent 6 }} */}}
{{- define "django-service.labels.matchLabels" -}}
app.kubernetes.io/name: {{ include "django-service.names.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Usage: {{ include "django-service.labels.release" . | nindent 4 }} (the labels every object shares besides name and instance) */}}
{{- define "django-service.labels.release" -}}
helm.sh/chart: {{ include "django-service.names.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: django-mesh
{{- end -}}

{{/* Usage: {{ include "django-service.labels.component" (dict "component" "migration" "context" $) | nindent 4 }} (labels of a pod the Service must NOT select: no name label) */}}
{{- define "django-service.labels.component" -}}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{ include "django-service.labels.release" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}
