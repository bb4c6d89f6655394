{{/* References to the Secret the operator creates: the chart never holds a secret value. */}}

{{/* Usage: {{ include "django-service.secrets.env" . | nindent 12 }} (EnvVar list: secrets and extraEnv, for the app container) */}}
{{- define "django-service.secrets.env" -}}
{{- include "django-service.secrets.envWith" (dict "databaseUrlKey" .Values.secrets.databaseUrlKey "context" .) -}}
{{- end -}}

{{/* Usage: {{ include "django-service.secrets.migrationDatabaseUrlKey" . }} (behind a transaction pooler the migration Job connects directly: its advisory lock needs a session) */}}
{{- define "django-service.secrets.migrationDatabaseUrlKey" -}}
{{- if .Values.database.pooler.enabled -}}
{{- .Values.secrets.directDatabaseUrlKey -}}
{{- else -}}
{{- .Values.secrets.databaseUrlKey -}}
{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.secrets.envWith" (dict "databaseUrlKey" KEY "context" .) | nindent 12 }} (the same list, DATABASE_URL read from KEY) */}}
{{- define "django-service.secrets.envWith" -}}
{{- $key := .databaseUrlKey -}}
{{- with .context -}}
{{- $secret := include "django-service.names.secret" . -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
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
{{- end -}}
