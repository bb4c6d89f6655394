{{/* Image references: pinned by tag (default: the chart's appVersion) and optionally by digest. */}}

{{/* Usage: {{ include "django-service.images.image" (dict "image" .Values.image "context" $) }} */}}
{{- define "django-service.images.image" -}}
{{- $tag := .image.tag | default .context.Chart.AppVersion | toString -}}
{{- if or (eq $tag "latest") (eq $tag "") -}}
{{- fail (printf "image %s: pin a tag (or leave it empty for the appVersion); %q is not allowed" .image.repository $tag) -}}
{{- end -}}
{{- $repository := .image.repository -}}
{{- if .image.registry -}}
{{- $repository = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Usage: {{- with include "django-service.images.pullSecrets" . }}{{ . | nindent 6 }}{{ end }} (empty without pull secrets) */}}
{{- define "django-service.images.pullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ .name }}
{{- end }}
{{- end -}}
{{- end -}}
