{{/* An optional PodDisruptionBudget. maxUnavailable never blocks a node drain, even with one replica. */}}

{{/* Usage: {{ include "django-service.pdb.render" . }} */}}
{{- define "django-service.pdb.render" -}}
{{- if .Values.podDisruptionBudget.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
spec:
  maxUnavailable: {{ .Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "django-service.labels.matchLabels" . | nindent 6 }}
{{- end -}}
{{- end -}}
