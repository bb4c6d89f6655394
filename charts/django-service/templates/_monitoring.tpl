{{/* Prometheus Operator objects and the Grafana dashboard; rules and dashboard JSON come from files in the app chart. */}}

{{/* Usage: {{ include "django-service.monitoring.labels" . | nindent 4 }} (standard labels + the `release` label Prometheus selects on) */}}
{{- define "django-service.monitoring.labels" -}}
{{ include "django-service.labels.standard" . }}
{{- with .Values.monitoring.releaseLabel }}
release: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Usage: {{ include "django-service.monitoring.file" (dict "path" "files/rules.yaml" "context" $) }} (fails when the app chart does not ship the file) */}}
{{- define "django-service.monitoring.file" -}}
{{- $content := .context.Files.Get .path -}}
{{- if not $content -}}
{{- fail (printf "%s: file %q is missing or empty in chart %s" .what .path .context.Chart.Name) -}}
{{- end -}}
{{- $content -}}
{{- end -}}

{{/* Usage: {{ include "django-service.monitoring.serviceMonitor" . }} */}}
{{- define "django-service.monitoring.serviceMonitor" -}}
{{- if .Values.monitoring.serviceMonitor.enabled -}}
{{- $sm := .Values.monitoring.serviceMonitor -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.monitoring.labels" . | nindent 4 }}
spec:
  {{- /* job="<service>" whatever the release is called: the rules and dashboards select on it */}}
  jobLabel: app.kubernetes.io/name
  namespaceSelector:
    matchNames:
      - {{ include "django-service.names.namespace" . }}
  selector:
    matchLabels:
      {{- include "django-service.labels.matchLabels" . | nindent 6 }}
  # Internal ports only (the Ingress routes to `http`): an `endpoint` label tells the targets (and
  # `up`) apart, the same labels the local Prometheus of `make test` uses.
  endpoints:
    - port: metrics
      path: {{ include "django-service.contract.metricsPath" . }}
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      relabelings:
        - targetLabel: endpoint
          replacement: app
    {{- if include "django-service.config.sidecarEnabled" . }}
    - port: sidecar-metrics
      path: {{ include "django-service.contract.sidecarMetricsPath" . }}
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
      relabelings:
        - targetLabel: endpoint
          replacement: sidecar
    {{- end }}
{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.monitoring.prometheusRule" . }} */}}
{{- define "django-service.monitoring.prometheusRule" -}}
{{- if .Values.monitoring.prometheusRule.enabled -}}
{{- $path := .Values.monitoring.prometheusRule.rulesFile -}}
{{- $rules := include "django-service.monitoring.file" (dict "path" $path "what" "monitoring.prometheusRule.rulesFile" "context" .) | fromYaml -}}
{{- if or (hasKey $rules "Error") (not (kindIs "slice" $rules.groups)) -}}
{{- fail (printf "monitoring.prometheusRule.rulesFile: %s must be YAML with a `groups:` list %s" $path (default "" $rules.Error)) -}}
{{- end -}}
{{- /* Alerts link their dashboard on the generator's Grafana (http://localhost:3000): point them at this cluster's. */ -}}
{{- with .Values.monitoring.grafanaUrl -}}
{{- $base := trimSuffix "/" . -}}
{{- range $group := $rules.groups -}}
{{- range $rule := $group.rules -}}
{{- if and (kindIs "map" $rule.annotations) (hasKey $rule.annotations "dashboard_url") -}}
{{- $_ := set $rule.annotations "dashboard_url" (regexReplaceAll "^https?://[^/]+" $rule.annotations.dashboard_url $base) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.monitoring.labels" . | nindent 4 }}
spec:
  groups:
    {{- toYaml $rules.groups | nindent 4 }}
{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.monitoring.dashboard" . }} (a ConfigMap Grafana's sidecar picks up by its grafana_dashboard label) */}}
{{- define "django-service.monitoring.dashboard" -}}
{{- if .Values.monitoring.dashboard.enabled -}}
{{- $path := .Values.monitoring.dashboard.file -}}
{{- $json := include "django-service.monitoring.file" (dict "path" $path "what" "monitoring.dashboard.file" "context" .) -}}
{{- $parsed := fromJson $json -}}
{{- if hasKey $parsed "Error" -}}
{{- fail (printf "monitoring.dashboard.file: %s is not valid JSON: %s" $path $parsed.Error) -}}
{{- end -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "django-service.names.suffixed" (dict "suffix" "dashboard" "context" .) }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
    grafana_dashboard: "1"
  annotations:
    grafana_folder: {{ .Values.monitoring.dashboard.folder | quote }}
data:
  {{ include "django-service.names.name" . }}.json: |-
    {{- $json | nindent 4 }}
{{- end -}}
{{- end -}}
