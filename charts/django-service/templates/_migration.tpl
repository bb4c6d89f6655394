{{/* Migrations run once per release, before the new pods: a pre-install,pre-upgrade hook Job. */}}

{{/* Usage: {{ include "django-service.migration.env" . | nindent 12 }} (the app's environment inline: the hook runs before the release's ConfigMap exists) */}}
{{- define "django-service.migration.env" -}}
{{- $env := include "django-service.config.appEnv" . | fromYaml -}}
{{- /* the Job serves no request: no sidecar, so no principal secret to trust */}}
{{- $_ := set $env "MESHAUTH_MODE" "inprocess" -}}
{{- $_ := unset $env "MESHAUTH_PRINCIPAL_SECRET_FILE" -}}
{{- /* migrate_locked connects directly, never through the transaction pooler */}}
{{- $_ := unset $env "DATABASE_POOLER" -}}
{{- range $name := keys $env | sortAlpha }}
{{- if not (hasPrefix "GUNICORN_" $name) }}
- name: {{ $name }}
  value: {{ get $env $name | toString | quote }}
{{- end }}
{{- end }}
{{ include "django-service.secrets.envWith" (dict "databaseUrlKey" (include "django-service.secrets.migrationDatabaseUrlKey" .) "context" .) }}
{{- end -}}

{{/* Usage: {{ include "django-service.migration.render" . }} */}}
{{- define "django-service.migration.render" -}}
{{- if .Values.migrations.enabled -}}
{{- $m := .Values.migrations -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "django-service.names.suffixed" (dict "suffix" "migrate" "context" .) }}
  namespace: {{ include "django-service.names.namespace" . }}
  labels:
    {{- include "django-service.labels.component" (dict "component" "migration" "context" .) | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ $m.backoffLimit }}
  activeDeadlineSeconds: {{ $m.activeDeadlineSeconds }}
  template:
    metadata:
      {{- /* no app.kubernetes.io/name label: the Service and the PodDisruptionBudget must not select this pod */}}
      labels:
        {{- include "django-service.labels.component" (dict "component" "migration" "context" .) | nindent 8 }}
    spec:
      restartPolicy: Never
      {{- /* the namespace's default ServiceAccount, without a token: the release's own does not exist yet on install */}}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with include "django-service.images.pullSecrets" . }}{{ . | nindent 6 }}{{ end }}
      {{- include "django-service.security.pod" . | nindent 6 }}
      containers:
        - name: migrate
          image: {{ include "django-service.images.image" (dict "image" .Values.image "context" $) }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command:
            - django-admin
            - migrate_locked
          env:
            {{- include "django-service.migration.env" . | nindent 12 }}
          resources:
            {{- toYaml $m.resources | nindent 12 }}
          {{- include "django-service.security.container" . | nindent 10 }}
          {{- include "django-service.pod.appVolumeMounts" (dict "sidecar" false "context" .) | nindent 10 }}
      {{- include "django-service.pod.volumes" (dict "sidecar" false "context" .) | nindent 6 }}
      {{- with include "django-service.pod.scheduling" . }}{{ . | nindent 6 }}{{ end }}
{{- end -}}
{{- end -}}
