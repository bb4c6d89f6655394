{{/* Checks across values that a JSON schema cannot express; each failure says what to change. */}}

{{/* Usage: {{ include "django-service.validate.values" . }} (renders nothing or fails the render) */}}
{{- define "django-service.validate.values" -}}
{{- $errors := list -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- $drain := add (int .Values.gunicorn.gracefulTimeout) (int .Values.lifecycle.preStopSleepSeconds) -}}
{{- if ge $drain $grace -}}
{{- $errors = append $errors (printf "gunicorn.gracefulTimeout (%d) + lifecycle.preStopSleepSeconds (%d) must be below terminationGracePeriodSeconds (%d), or the kubelet kills workers mid-request" (int .Values.gunicorn.gracefulTimeout) (int .Values.lifecycle.preStopSleepSeconds) $grace) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- $errors = append $errors (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.auth.clientId (not .Values.secrets.clientSecretKey) -}}
{{- $errors = append $errors "auth.clientId is set: set secrets.clientSecretKey to the key of the client secret in the existing Secret" -}}
{{- end -}}
{{- if and .Values.secrets.clientSecretKey (not .Values.auth.clientId) -}}
{{- $errors = append $errors "secrets.clientSecretKey is set: set auth.clientId too" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- $errors = append $errors "ingress.enabled: list at least one entry in ingress.hosts" -}}
{{- end -}}
{{- if gt (int .Values.gunicorn.timeout) (int .Values.terminationGracePeriodSeconds) -}}
{{- $errors = append $errors (printf "gunicorn.timeout (%d) must not exceed terminationGracePeriodSeconds (%d)" (int .Values.gunicorn.timeout) $grace) -}}
{{- end -}}
{{- if and .Values.database.pooler.enabled (eq .Values.secrets.directDatabaseUrlKey .Values.secrets.databaseUrlKey) -}}
{{- $errors = append $errors "database.pooler.enabled: secrets.directDatabaseUrlKey must name a direct database URL, not the pooled secrets.databaseUrlKey (migrate_locked's advisory lock needs a session)" -}}
{{- end -}}
{{- range $name, $_ := .Values.env -}}
{{- if or (hasPrefix "MESHAUTH_" $name) (has $name (list "DATABASE_URL" "DATABASE_POOLER" "SECRET_KEY")) -}}
{{- $errors = append $errors (printf "env.%s: set it through its own value (auth.*, secrets.*), not env" $name) -}}
{{- end -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nInvalid values for %s:\n  - %s\n" .Chart.Name (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
