{{/* Default-deny NetworkPolicy: only the traffic a service of the mesh needs. */}}

{{/* Usage: {{ include "django-service.networkpolicy.peer" (dict "namespaceSelector" $ns "podSelector" $pods) | nindent 8 }} (one `from`/`to` entry; an empty namespaceSelector means the release's namespace) */}}
{{- define "django-service.networkpolicy.peer" -}}
{{- $peer := dict "podSelector" (default (dict) .podSelector) -}}
{{- if .namespaceSelector -}}
{{- $_ := set $peer "namespaceSelector" .namespaceSelector -}}
{{- end -}}
{{- toYaml (list $peer) -}}
{{- end -}}

{{/* Usage: {{ include "django-service.networkpolicy.baseEgress" . | nindent 4 }} (egress rules to DNS and PostgreSQL) */}}
{{- define "django-service.networkpolicy.baseEgress" -}}
{{- $np := .Values.networkPolicy -}}

# DNS
- to:
    {{- include "django-service.networkpolicy.peer" $np.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# PostgreSQL
- to:
    {{- if $np.database.cidrs }}
    {{- range $np.database.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- else }}
    {{- include "django-service.networkpolicy.peer" $np.database | nindent 4 }}
    {{- end }}
  ports:
    - port: {{ $np.database.port }}
      protocol: TCP
{{- end -}}

{{/* Usage: {{ include "django-service.networkpolicy.render" . }} */}}
{{- define "django-service.networkpolicy.render" -}}
{{- if .Values.networkPolicy.enabled -}}
{{- $np := .Values.networkPolicy -}}
{{- $httpPort := include "django-service.contract.httpPort" . | int -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "django-service.labels.matchLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  ingress:
    - from:
        {{- if $np.allowSameNamespace }}
        - podSelector: {}
        {{- end }}
        {{- if $np.ingressController.enabled }}
        {{- include "django-service.networkpolicy.peer" $np.ingressController | nindent 8 }}
        {{- end }}
      ports:
        - port: {{ $httpPort }}
          protocol: TCP
    # The internal ports (metrics, and the admin unless django.adminPublic): Prometheus only.
    - from:
        {{- include "django-service.networkpolicy.peer" $np.metricsScraper | nindent 8 }}
      ports:
        - port: {{ include "django-service.contract.metricsPort" . | int }}
          protocol: TCP
        {{- if include "django-service.config.sidecarEnabled" . }}
        - port: {{ include "django-service.contract.sidecarMetricsPort" . | int }}
          protocol: TCP
        {{- end }}
  egress:
    {{- include "django-service.networkpolicy.baseEgress" . | nindent 4 }}
    # identity (JWKS, service tokens) and the services this one calls
    - to:
        {{- range prepend .Values.mesh.calls "identity" | uniq }}
        {{- include "django-service.networkpolicy.peer" (dict "namespaceSelector" $np.meshNamespaceSelector "podSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" .))) | nindent 8 }}
        {{- end }}
      ports:
        - port: {{ $httpPort }}
          protocol: TCP
    {{- with $np.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.networkpolicy.migration" . }} (default deny for the migration hook's pods: DNS and PostgreSQL only; it applies from the first upgrade, as the hook runs before the release's objects exist on install) */}}
{{- define "django-service.networkpolicy.migration" -}}
{{- if and .Values.networkPolicy.enabled .Values.migrations.enabled -}}
{{- $np := .Values.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "django-service.names.suffixed" (dict "suffix" "migrate" "context" .) }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
      app.kubernetes.io/component: migration
  policyTypes:
    - Ingress
    - Egress
  ingress: []
  egress:
    {{- include "django-service.networkpolicy.baseEgress" . | nindent 4 }}
{{- end -}}
{{- end -}}
