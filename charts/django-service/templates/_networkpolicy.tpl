{{/* Default-deny NetworkPolicy: only the traffic a service of the mesh needs. */}}

{{/* Usage: {{ include "django-service.networkpolicy.peer" (dict "namespaceSelector" $ns "podSelector" $pods) | nindent 8 }} (one `from`/`to` entry; an empty namespaceSelector means the release's namespace) */}}
{{- define "django-service.networkpolicy.peer" -}}
{{- $peer := dict "podSelector" (default (dict) .podSelector) -}}
{{- if .namespaceSelector -}}
{{- $_ := set $peer "namespaceSelector" .namespaceSelector -}}
{{- end -}}
{{- toYaml (list $peer) -}}
{{- end -}}

{{/* Usage: {{ include "django-service.networkpolicy.render" . }} */}}
{{- define "django-service.networkpolicy.render" -}}
{{- if .Values.networkPolicy.enabled -}}
{{- $np := .Values.networkPolicy -}}
{{- $httpPort := include "django-service.config.httpPort" . | int -}}
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
        {{- include "django-service.networkpolicy.peer" $np.metricsScraper | nindent 8 }}
      ports:
        - port: {{ $httpPort }}
          protocol: TCP
  egress:
    # DNS
    - to:
        {{- include "django-service.networkpolicy.peer" $np.dns | nindent 8 }}
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
        {{- include "django-service.networkpolicy.peer" $np.database | nindent 8 }}
        {{- end }}
      ports:
        - port: {{ $np.database.port }}
          protocol: TCP
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
