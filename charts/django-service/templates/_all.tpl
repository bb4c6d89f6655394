{{/* Everything a service renders, in one call: an app chart's only manifest template. */}}

{{/* Usage: {{ include "django-service.all.render" . }} */}}
{{- define "django-service.all.render" -}}
{{- include "django-service.capabilities.check" . -}}
{{- include "django-service.validate.values" . -}}
{{- $docs := list
  (include "django-service.serviceaccount.render" .)
  (include "django-service.config.configmap" .)
  (include "django-service.service.render" .)
  (include "django-service.deployment.render" .)
  (include "django-service.hpa.render" .)
  (include "django-service.pdb.render" .)
  (include "django-service.networkpolicy.render" .)
  (include "django-service.networkpolicy.migration" .)
  (include "django-service.ingress.render" .)
  (include "django-service.monitoring.serviceMonitor" .)
  (include "django-service.monitoring.prometheusRule" .)
  (include "django-service.monitoring.dashboard" .)
  (include "django-service.migration.render" .)
-}}
{{- range $docs }}
{{- if trim . }}
---
{{ . }}
{{- end }}
{{- end }}
{{- end -}}
