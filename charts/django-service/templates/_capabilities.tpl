{{/* What the cluster must offer. Helm checks Chart.yaml's kubeVersion on install; this check also
     stops `helm lint --kube-version` and `helm template --kube-version` with the reason. */}}

{{/* Usage: {{ include "django-service.capabilities.check" . }} (renders nothing or fails the render) */}}
{{- define "django-service.capabilities.check" -}}
{{- $minimum := "1.29.0-0" -}}
{{- if not (semverCompare (printf ">=%s" $minimum) .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "\n\n%s needs Kubernetes >= 1.29 (native sidecar containers: the meshauth sidecar is an init container with restartPolicy: Always; matchLabelKeys in topology spread constraints); the target is %s. Upgrade the cluster, or pass a --kube-version of 1.29 or later.\n" .Chart.Name .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end -}}
