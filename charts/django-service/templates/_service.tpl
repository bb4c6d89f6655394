{{/* The ClusterIP Service in front of the pods' service port, and the metrics ports the ServiceMonitor scrapes (the Ingress routes to `http` only). */}}

{{/* Usage: {{ include "django-service.service.render" . }} */}}
{{- define "django-service.service.render" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: ClusterIP
  selector:
    {{- include "django-service.labels.matchLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    - name: metrics
      port: {{ include "django-service.contract.metricsPort" . }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
    {{- if include "django-service.config.sidecarEnabled" . }}
    - name: sidecar-metrics
      port: {{ include "django-service.contract.sidecarMetricsPort" . }}
      targetPort: sidecar-metrics
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end -}}
