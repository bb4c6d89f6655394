{{/* Names of the service and of the objects a release creates. */}}

{{/* Usage: {{ include "django-service.names.name" . }} */}}
{{- define "django-service.names.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.service" . }} (the mesh service = Python package = schema) */}}
{{- define "django-service.names.service" -}}
{{- .Chart.Name | replace "-" "_" -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.fullname" . }} */}}
{{- define "django-service.names.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.suffixed" (dict "suffix" "migrate" "context" $) }} */}}
{{- define "django-service.names.suffixed" -}}
{{- $base := include "django-service.names.fullname" .context | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base .suffix -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.chart" . }} */}}
{{- define "django-service.names.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.serviceAccount" . }} */}}
{{- define "django-service.names.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "django-service.names.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.secret" . }} (the existing Secret with DATABASE_URL, SECRET_KEY, …) */}}
{{- define "django-service.names.secret" -}}
{{- default (include "django-service.names.suffixed" (dict "suffix" "secrets" "context" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.namespace" . }} */}}
{{- define "django-service.names.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* Usage: {{ include "django-service.names.serviceHost" . }} (in-cluster DNS name of the Service) */}}
{{- define "django-service.names.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "django-service.names.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}
