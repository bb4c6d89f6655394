{{/* The pods' ServiceAccount: no API token is mounted, the services never call the Kubernetes API. */}}

{{/* Usage: {{ include "django-service.serviceaccount.render" . }} */}}
{{- define "django-service.serviceaccount.render" -}}
{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "django-service.names.serviceAccount" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end -}}
{{- end -}}
