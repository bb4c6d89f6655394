{{/* An optional Ingress to the Service (TLS ends at the ingress controller). */}}

{{/* Usage: {{ include "django-service.ingress.render" . }} */}}
{{- define "django-service.ingress.render" -}}
{{- if .Values.ingress.enabled -}}
{{- $fullname := include "django-service.names.fullname" . -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $fullname }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
  {{- $annotations := deepCopy .Values.ingress.annotations -}}
  {{- if not (include "django-service.config.sidecarEnabled" .) }}
  {{- /* in-process, gunicorn's workers would read request bodies themselves: a slow client would hold
  one. ingress-nginx buffers bodies by default; say so, so that turning it off is a visible choice. */}}
  {{- $_ := set $annotations "nginx.ingress.kubernetes.io/proxy-request-buffering" (get $annotations "nginx.ingress.kubernetes.io/proxy-request-buffering" | default "on") }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with .Values.ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- with .Values.ingress.tls }}
  tls:
    {{- range . }}
    - secretName: {{ .secretName }}
      hosts:
        {{- toYaml .hosts | nindent 8 }}
    {{- end }}
  {{- end }}
  rules:
    {{- range .Values.ingress.hosts }}
    - host: {{ .host | quote }}
      http:
        paths:
          {{- range .paths }}
          - path: {{ .path }}
            pathType: {{ .pathType }}
            backend:
              service:
                name: {{ $fullname }}
                port:
                  name: http
          {{- end }}
    {{- end }}
{{- end -}}
{{- end -}}
