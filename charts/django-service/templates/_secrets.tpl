{{/* References to the Secret the operator creates: the chart never holds a secret value. */}}

{{/* Usage: {{ include "django-service.secrets.env" . | nindent 12 }} (EnvVar list: secrets and extraEnv, for the app container and the migration Job) */}}
{{- define "django-service.secrets.env" -}}
{{- $secret := include "django-service.names.secret" . -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.secrets.databaseUrlKey }}
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.secrets.secretKeyKey }}
{{- if .Values.secrets.clientSecretKey }}
- name: MESHAUTH_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.secrets.clientSecretKey }}
{{- end }}
{{- range .Values.mesh.reads }}
{{- $variable := printf "%s_READ_DATABASE_URL" (upper . | replace "-" "_") }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $variable }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
