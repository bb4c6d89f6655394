{{/* The pod: the app container, the meshauth sidecar, probes and memory-backed volumes. */}}

{{/* Usage: {{ include "django-service.pod.volumes" (dict "sidecar" true "context" $) | nindent 6 }} */}}
{{- define "django-service.pod.volumes" -}}
volumes:
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: {{ .context.Values.volumes.tmpSizeLimit }}
  - name: prometheus
    emptyDir:
      medium: Memory
      sizeLimit: {{ .context.Values.volumes.metricsSizeLimit }}
{{- if .sidecar }}
  - name: meshauth
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
  {{- /* gunicorn's unix socket, the sidecar's upstream: in the app's and the sidecar's mounts only */}}
  - name: gunicorn
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
{{- end }}
{{- if .context.Values.auth.clientId }}
  {{- /* The workers' shared service tokens (MESHAUTH_TOKEN_CACHE_DIR): in memory, the app container's only. */}}
  - name: service-tokens
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
{{- end }}
{{- end -}}

{{/* Usage: {{ include "django-service.pod.appVolumeMounts" (dict "sidecar" true "context" $) | nindent 10 }} */}}
{{- define "django-service.pod.appVolumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: prometheus
    mountPath: {{ include "django-service.config.metricsDir" .context }}
{{- if .sidecar }}
  - name: meshauth
    mountPath: /run/meshauth
    readOnly: true
  - name: gunicorn
    mountPath: {{ include "django-service.contract.upstreamSocketDir" .context }}
{{- end }}
{{- if .context.Values.auth.clientId }}
  - name: service-tokens
    mountPath: {{ include "django-service.config.tokenCacheDir" .context }}
{{- end }}
{{- end -}}

{{/* Usage: {{ include "django-service.pod.probes" . | nindent 10 }} (the app's probes, through the pod's service port) */}}
{{- define "django-service.pod.probes" -}}
{{- $port := include "django-service.contract.httpPort" . | int -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet:
    path: {{ include "django-service.contract.livezPath" . }}
    port: {{ $port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: {{ include "django-service.contract.livezPath" . }}
    port: {{ $port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ include "django-service.contract.readyzPath" . }}
    port: {{ $port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  {{- /* the database check is bounded by READYZ_TIMEOUT; give the answer one more second */}}
  timeoutSeconds: {{ add (ceil $p.readyzTimeoutSeconds) 1 }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* Usage: {{ include "django-service.pod.appContainer" . | nindent 8 }} */}}
{{- define "django-service.pod.appContainer" -}}
{{- $sidecar := include "django-service.config.sidecarEnabled" . -}}
- name: app
  image: {{ include "django-service.images.image" (dict "image" .Values.image "context" $) }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - gunicorn
    - --config
    - python:meshkit.gunicorn
    - {{ printf "%s.wsgi" (include "django-service.names.service" .) }}
  ports:
    {{- if not $sidecar }}
    - name: http
      containerPort: {{ include "django-service.contract.httpPort" . }}
      protocol: TCP
    {{- end }}
    - name: metrics
      containerPort: {{ include "django-service.contract.metricsPort" . }}
      protocol: TCP
  envFrom:
    - configMapRef:
        name: {{ include "django-service.names.fullname" . }}
  env:
    {{- include "django-service.secrets.env" . | nindent 4 }}
  {{- include "django-service.pod.probes" . | nindent 2 }}
  lifecycle:
    preStop:
      {{- /* an exec sleep works on every supported Kubernetes (the sleep action needs 1.30+); it gives
      endpoints time to drop the pod before gunicorn gets SIGTERM */}}
      exec:
        command: ["sleep", {{ .Values.lifecycle.preStopSleepSeconds | toString | quote }}]
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  {{- include "django-service.security.container" . | nindent 2 }}
  {{- include "django-service.pod.appVolumeMounts" (dict "sidecar" $sidecar "context" .) | nindent 2 }}
{{- end -}}

{{/* Usage: {{ include "django-service.pod.principalSecretContainer" . | nindent 8 }} (the first init container: writes the per-pod principal secret into the memory volume) */}}
{{- define "django-service.pod.principalSecretContainer" -}}
- name: principal-secret
  image: {{ include "django-service.images.image" (dict "image" .Values.auth.sidecar.image "context" $) }}
  imagePullPolicy: {{ .Values.auth.sidecar.image.pullPolicy }}
  {{- /* born inside the pod, before the sidecar and the app read it: never in values, a ConfigMap or an image */}}
  command:
    - meshauth-principal-secret
    - {{ include "django-service.config.principalSecretFile" . }}
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      cpu: 100m
      memory: 64Mi
  {{- include "django-service.security.container" . | nindent 2 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: meshauth
      mountPath: /run/meshauth
{{- end -}}

{{/* Usage: {{ include "django-service.pod.sidecarContainer" . | nindent 8 }} (native: an init container with restartPolicy Always, up before the app; else an ordinary container, see auth.sidecar.native) */}}
{{- define "django-service.pod.sidecarContainer" -}}
{{- $port := include "django-service.contract.httpPort" . | int -}}
- name: meshauth
  image: {{ include "django-service.images.image" (dict "image" .Values.auth.sidecar.image "context" $) }}
  imagePullPolicy: {{ .Values.auth.sidecar.image.pullPolicy }}
  {{- if .Values.auth.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  command:
    - meshauth-sidecar
  ports:
    - name: http
      containerPort: {{ $port }}
      protocol: TCP
    - name: sidecar-metrics
      containerPort: {{ include "django-service.contract.sidecarMetricsPort" . }}
      protocol: TCP
  env:
    {{- range $name, $value := include "django-service.config.sidecarEnv" . | fromYaml }}
    - name: {{ $name }}
      value: {{ $value | toString | quote }}
    {{- end }}
  {{- /* the sidecar's own probes must not go through the app: the app starts only after the
  sidecar's startup probe passes, and a dead app must not restart the sidecar */}}
  startupProbe:
    tcpSocket:
      port: {{ $port }}
    periodSeconds: 1
    failureThreshold: 30
  livenessProbe:
    tcpSocket:
      port: {{ $port }}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    tcpSocket:
      port: {{ $port }}
    periodSeconds: 5
    failureThreshold: 3
  resources:
    {{- toYaml .Values.auth.sidecar.resources | nindent 4 }}
  {{- include "django-service.security.container" . | nindent 2 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: meshauth
      mountPath: /run/meshauth
      readOnly: true
    {{- /* connecting to a socket needs no write access to its directory */}}
    - name: gunicorn
      mountPath: {{ include "django-service.contract.upstreamSocketDir" . }}
      readOnly: true
{{- end -}}

{{/* Usage: {{ include "django-service.pod.topologySpread" . | nindent 6 }} */}}
{{- define "django-service.pod.topologySpread" -}}
{{- if .Values.topologySpread.enabled -}}
topologySpreadConstraints:
{{- range .Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "django-service.labels.matchLabels" $ | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}
{{- end }}
{{- end -}}

{{/* Usage: {{ include "django-service.pod.scheduling" . | nindent 6 }} (nodeSelector, tolerations, affinity, priorityClassName) */}}
{{- define "django-service.pod.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
