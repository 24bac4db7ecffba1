{{/* Labels every Emporium resource carries. */}}
{{- define "emporium.labels" -}}
app.kubernetes.io/name: emporium
{{ include "emporium.releaseLabels" . }}
{{- end }}

{{/* Labels of every resource of the release, whatever it is (Prometheus and Grafana name
themselves). */}}
{{- define "emporium.releaseLabels" -}}
app.kubernetes.io/part-of: emporium
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Labels that pick a component's pods: (dict "component" "catalog"). */}}
{{- define "emporium.selector" -}}
app.kubernetes.io/name: emporium
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image reference. */}}
{{- define "emporium.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* What the services call, by the design: the storefront calls all four; cart calls catalog
and inventory; order calls catalog, inventory and cart. */}}
{{- define "emporium.calls" -}}
storefront: [catalog, inventory, cart, order]
catalog: []
inventory: []
cart: [catalog, inventory]
order: [catalog, inventory, cart]
{{- end }}

{{/* Who calls each service; null means anyone (the storefront is the way in). */}}
{{- define "emporium.callers" -}}
storefront: null
catalog: [storefront, cart, order]
inventory: [storefront, cart, order]
cart: [storefront, order]
order: [storefront]
{{- end }}

{{/* Services that use the cache. */}}
{{- define "emporium.cached" -}}
[catalog, cart]
{{- end }}

{{/* Restricted pod security: non-root, RuntimeDefault seccomp. */}}
{{- define "emporium.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted container security: read-only root, no escalation, no capabilities. */}}
{{- define "emporium.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Settings and AWS credentials from the ConfigMap and Secret. */}}
{{- define "emporium.envFrom" -}}
- configMapRef:
    name: emporium-config
- secretRef:
    name: emporium-aws
    optional: true
{{- end }}

{{/* The Secret holding admin-key and session-key. */}}
{{- define "emporium.secretName" -}}
{{ .Values.secrets.existingSecret | default "emporium-secrets" }}
{{- end }}
