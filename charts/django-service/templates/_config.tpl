{{/* The runtime contract (docs/runtime-contract.md): the non-secret environment; its ports and paths are in _contract.tpl. */}}

{{/* Usage: {{ include "django-service.config.sidecarEnabled" . }} ("true" or "") */}}
{{- define "django-service.config.sidecarEnabled" -}}
{{- if eq .Values.auth.mode "sidecar" -}}true{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.config.principalSecretFile" . }} */}}
{{- define "django-service.config.principalSecretFile" -}}
/run/meshauth/principal-secret
{{- end -}}

{{/* Usage: {{ include "django-service.config.metricsDir" . }} (PROMETHEUS_MULTIPROC_DIR) */}}
{{- define "django-service.config.metricsDir" -}}
/run/prometheus
{{- end -}}

{{/* Usage: {{ include "django-service.config.tokenCacheDir" . }} (MESHAUTH_TOKEN_CACHE_DIR) */}}
{{- define "django-service.config.tokenCacheDir" -}}
/run/service-tokens
{{- end -}}

{{/* Usage: {{ include "django-service.config.jwksUrl" . }} */}}
{{- define "django-service.config.jwksUrl" -}}
{{- default (printf "%s/.well-known/jwks.json" (trimSuffix "/" .Values.auth.identityUrl)) .Values.auth.jwksUrl -}}
{{- end -}}

{{/* Usage: {{ include "django-service.config.allowedHosts" . }} (the Service's DNS names, the Ingress hosts, then django.allowedHosts) */}}
{{- define "django-service.config.allowedHosts" -}}
{{- $fullname := include "django-service.names.fullname" . -}}
{{- $hosts := list $fullname (printf "%s.%s" $fullname .Release.Namespace) (printf "%s.%s.svc" $fullname .Release.Namespace) (include "django-service.names.serviceHost" .) -}}
{{- if .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts -}}
{{- $hosts = append $hosts .host -}}
{{- end -}}
{{- end -}}
{{- concat $hosts .Values.django.allowedHosts | uniq | join "," -}}
{{- end -}}

{{/* Usage: {{ include "django-service.config.csrfTrustedOrigins" . }} (https://<ingress host>, then django.csrfTrustedOrigins) */}}
{{- define "django-service.config.csrfTrustedOrigins" -}}
{{- $origins := list -}}
{{- if .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts -}}
{{- $origins = append $origins (printf "https://%s" .host) -}}
{{- end -}}
{{- end -}}
{{- concat $origins .Values.django.csrfTrustedOrigins | uniq | join "," -}}
{{- end -}}

{{/* Usage: {{ include "django-service.config.appEnv" . | nindent 2 }} (YAML map: the app container's non-secret environment) */}}
{{- define "django-service.config.appEnv" -}}
DEBUG: {{ .Values.django.debug | toString | quote }}
ALLOWED_HOSTS: {{ include "django-service.config.allowedHosts" . | quote }}
CSRF_TRUSTED_ORIGINS: {{ include "django-service.config.csrfTrustedOrigins" . | quote }}
LOG_LEVEL: {{ .Values.django.logLevel | quote }}
DATABASE_CONN_MAX_AGE: {{ .Values.database.connMaxAge | toString | quote }}
DATABASE_CONN_HEALTH_CHECKS: {{ .Values.database.connHealthChecks | toString | quote }}
DATABASE_DISABLE_SERVER_SIDE_CURSORS: {{ .Values.database.disableServerSideCursors | toString | quote }}
DATABASE_CONNECT_TIMEOUT: {{ .Values.database.connectTimeout | toString | quote }}
{{- if .Values.database.pooler.enabled }}
DATABASE_POOLER: "transaction"
{{- end }}
READYZ_TIMEOUT: {{ .Values.probes.readyzTimeoutSeconds | toString | quote }}
{{- if include "django-service.config.sidecarEnabled" . }}
GUNICORN_BIND: {{ printf "unix:%s" (include "django-service.contract.upstreamSocket" .) | quote }}
{{- else }}
GUNICORN_BIND: {{ printf "0.0.0.0:%s" (include "django-service.contract.httpPort" .) | quote }}
{{- /* in-process, gunicorn is the front door: it believes X-Forwarded-Proto only from the ingress */}}
GUNICORN_FORWARDED_ALLOW_IPS: {{ prepend .Values.ingress.trustedProxies "127.0.0.1" | uniq | join "," | quote }}
{{- end }}
METRICS_BIND: {{ printf "0.0.0.0:%s" (include "django-service.contract.metricsPort" .) | quote }}
DJANGO_ADMIN_PUBLIC: {{ .Values.django.adminPublic | toString | quote }}
{{- if .Values.gunicorn.workers }}
GUNICORN_WORKERS: {{ .Values.gunicorn.workers | toString | quote }}
{{- end }}
GUNICORN_THREADS: {{ .Values.gunicorn.threads | toString | quote }}
GUNICORN_TIMEOUT: {{ .Values.gunicorn.timeout | toString | quote }}
GUNICORN_GRACEFUL_TIMEOUT: {{ .Values.gunicorn.gracefulTimeout | toString | quote }}
GUNICORN_KEEPALIVE: {{ .Values.gunicorn.keepalive | toString | quote }}
{{- $accessLog := .Values.gunicorn.accessLog }}
{{- if kindIs "invalid" $accessLog }}
{{- /* behind the sidecar, its access line is the pod's: gunicorn's would repeat it */}}
{{- $accessLog = not (include "django-service.config.sidecarEnabled" .) }}
{{- end }}
GUNICORN_ACCESS_LOG: {{ $accessLog | toString | quote }}
GUNICORN_MAX_REQUESTS: {{ .Values.gunicorn.maxRequests | toString | quote }}
GUNICORN_MAX_REQUESTS_JITTER: {{ .Values.gunicorn.maxRequestsJitter | toString | quote }}
PROMETHEUS_MULTIPROC_DIR: {{ include "django-service.config.metricsDir" . | quote }}
MESHAUTH_MODE: {{ .Values.auth.mode | quote }}
MESHAUTH_ISSUER: {{ .Values.auth.issuer | quote }}
MESHAUTH_AUDIENCE: {{ include "django-service.config.audience" . | quote }}
MESHAUTH_JWKS_URL: {{ include "django-service.config.jwksUrl" . | quote }}
MESHAUTH_IDENTITY_URL: {{ .Values.auth.identityUrl | quote }}
{{- if include "django-service.config.sidecarEnabled" . }}
MESHAUTH_PRINCIPAL_SECRET_FILE: {{ include "django-service.config.principalSecretFile" . | quote }}
{{- end }}
{{- if .Values.auth.clientId }}
MESHAUTH_CLIENT_ID: {{ .Values.auth.clientId | quote }}
MESHAUTH_TOKEN_CACHE_DIR: {{ include "django-service.config.tokenCacheDir" . | quote }}
{{- end }}
{{- range .Values.mesh.calls }}
{{ upper . | replace "-" "_" }}_URL: {{ printf "http://%s:%s" . (include "django-service.contract.httpPort" $) | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Usage: {{ include "django-service.config.audience" . }} (this service's name for service tokens, plus the mesh-wide audience of end users' tokens) */}}
{{- define "django-service.config.audience" -}}
{{- default (printf "%s,mesh" (include "django-service.names.service" .)) .Values.auth.audience -}}
{{- end -}}

{{/* Usage: {{ include "django-service.config.sidecarEnv" . | nindent 2 }} (YAML map: the sidecar's environment) */}}
{{- define "django-service.config.sidecarEnv" -}}
MESHAUTH_ISSUER: {{ .Values.auth.issuer | quote }}
MESHAUTH_AUDIENCE: {{ include "django-service.config.audience" . | quote }}
MESHAUTH_JWKS_URL: {{ include "django-service.config.jwksUrl" . | quote }}
MESHAUTH_PRINCIPAL_SECRET_FILE: {{ include "django-service.config.principalSecretFile" . | quote }}
MESHAUTH_SIDECAR_ENGINE: {{ .Values.auth.sidecar.engine | quote }}
MESHAUTH_SIDECAR_LISTEN: {{ printf "0.0.0.0:%s" (include "django-service.contract.httpPort" .) | quote }}
MESHAUTH_SIDECAR_UPSTREAM: {{ printf "unix:%s" (include "django-service.contract.upstreamSocket" .) | quote }}
MESHAUTH_SIDECAR_METRICS_LISTEN: {{ printf "0.0.0.0:%s" (include "django-service.contract.sidecarMetricsPort" .) | quote }}
MESHAUTH_SIDECAR_TRUSTED_PROXIES: {{ .Values.ingress.trustedProxies | join "," | quote }}
MESHAUTH_PUBLIC_PATHS: {{ .Values.auth.publicPaths | join "," | quote }}
LOG_LEVEL: {{ .Values.django.logLevel | quote }}
{{- end -}}

{{/* Usage: {{ include "django-service.config.checksum" . }} (restarts pods when their configuration changes) */}}
{{- define "django-service.config.checksum" -}}
{{- printf "%s\n%s" (include "django-service.config.appEnv" .) (include "django-service.config.sidecarEnv" .) | sha256sum -}}
{{- end -}}

{{/* Usage: {{ include "django-service.config.configmap" . }} */}}
{{- define "django-service.config.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
data:
  {{- include "django-service.config.appEnv" . | nindent 2 }}
{{- end -}}
