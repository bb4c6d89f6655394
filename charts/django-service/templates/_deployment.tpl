{{/* The service's Deployment. */}}

{{/* Usage: {{ include "django-service.deployment.render" . }} */}}
{{- define "django-service.deployment.render" -}}
{{- $sidecar := include "django-service.config.sidecarEnabled" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "django-service.names.fullname" . }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.standard" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: {{ .Values.revisionHistoryLimit }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "django-service.labels.matchLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "django-service.labels.standard" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "django-service.config.checksum" . }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "django-service.names.serviceAccount" . }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      {{- with include "django-service.images.pullSecrets" . }}{{ . | nindent 6 }}{{ end }}
      {{- include "django-service.security.pod" . | nindent 6 }}
      {{- if $sidecar }}
      initContainers:
        {{- include "django-service.pod.principalSecretContainer" . | nindent 8 }}
        {{- if .Values.auth.sidecar.native }}
        {{- include "django-service.pod.sidecarContainer" . | nindent 8 }}
        {{- end }}
      {{- end }}
      containers:
        {{- include "django-service.pod.appContainer" . | nindent 8 }}
        {{- if and $sidecar (not .Values.auth.sidecar.native) }}
        {{- include "django-service.pod.sidecarContainer" . | nindent 8 }}
        {{- end }}
      {{- include "django-service.pod.volumes" (dict "sidecar" $sidecar "context" .) | nindent 6 }}
      {{- with include "django-service.pod.topologySpread" . }}{{ . | nindent 6 }}{{ end }}
      {{- with include "django-service.pod.scheduling" . }}{{ . | nindent 6 }}{{ end }}
{{- end -}}
