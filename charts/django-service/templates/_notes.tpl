{{/* The text `helm install` prints: how to reach the service and where its dashboard is. */}}

{{/* Usage: {{ include "django-service.notes.render" . }} (the whole NOTES.txt of an app chart) */}}
{{- define "django-service.notes.render" -}}
{{- $fullname := include "django-service.names.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{ .Chart.Name }} {{ .Chart.AppVersion }} is installed as release {{ .Release.Name }} in namespace {{ $ns }}
(auth: {{ .Values.auth.mode }}{{ if include "django-service.config.sidecarEnabled" . }}, meshauth sidecar on port {{ include "django-service.contract.httpPort" . }}{{ end }}).

Inside the cluster:
  http://{{ include "django-service.names.serviceHost" . }}:{{ .Values.service.port }}/

From your machine:
  kubectl --namespace {{ $ns }} port-forward service/{{ $fullname }} 8000:{{ .Values.service.port }}
  curl http://127.0.0.1:8000{{ include "django-service.contract.livezPath" . }}
  open http://127.0.0.1:8000/api/v1/docs
{{- if .Values.ingress.enabled }}

Through the Ingress:
{{- range .Values.ingress.hosts }}
  https://{{ .host }}/
{{- end }}
{{- end }}

The pods read DATABASE_URL and SECRET_KEY{{ if .Values.secrets.clientSecretKey }} and the client secret{{ end }} from the Secret
"{{ include "django-service.names.secret" . }}" (keys {{ .Values.secrets.databaseUrlKey }}, {{ .Values.secrets.secretKeyKey }}{{ with .Values.secrets.clientSecretKey }}, {{ . }}{{ end }}); the chart never creates it.
{{- if .Values.migrations.enabled }}
Migrations ran in the hook Job {{ include "django-service.names.suffixed" (dict "suffix" "migrate" "context" .) }} (a failed run stays for its logs:
  kubectl --namespace {{ $ns }} logs job/{{ include "django-service.names.suffixed" (dict "suffix" "migrate" "context" .) }}).
{{- end }}
{{- if .Values.monitoring.dashboard.enabled }}

Dashboard: Grafana folder "{{ .Values.monitoring.dashboard.folder }}", dashboard "{{ .Chart.Name }}" (ConfigMap
{{ include "django-service.names.suffixed" (dict "suffix" "dashboard" "context" .) }}, loaded by Grafana's sidecar from the label grafana_dashboard="1").
{{- else }}

Dashboard: disabled (monitoring.dashboard.enabled=false); the JSON is in the chart at {{ .Values.monitoring.dashboard.file }}.
{{- end }}
{{- if .Values.monitoring.serviceMonitor.enabled }}
Metrics: scraped by the ServiceMonitor {{ $fullname }} (job="{{ include "django-service.names.name" . }}").
{{- end }}
{{- end -}}
