{{/* Security contexts that pass the Pod Security Standard "restricted" (the images run as 10001). */}}

{{/* Usage: {{ include "django-service.security.pod" . | nindent 6 }} */}}
{{- define "django-service.security.pod" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.securityContext.runAsUser }}
  runAsGroup: {{ .Values.securityContext.runAsGroup }}
  fsGroup: {{ .Values.securityContext.runAsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Usage: {{ include "django-service.security.container" . | nindent 10 }} */}}
{{- define "django-service.security.container" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.securityContext.runAsUser }}
  runAsGroup: {{ .Values.securityContext.runAsGroup }}
  privileged: false
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
