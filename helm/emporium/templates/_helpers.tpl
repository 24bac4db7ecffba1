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

{{/* The services, as the binary's table of services (crates/emporium/src/services.rs)
declares them, which the deployment tests check this against: what each calls, whether it uses
the cache, and which one is the way in. Ports, replicas and resources are values
(`services.<name>`). A list, so what is made from it keeps this order. */}}
{{- define "emporium.services" -}}
- name: storefront
  calls: [catalog, inventory, cart, order]
  public: true
- name: catalog
  calls: []
  cache: true
- name: inventory
  calls: []
- name: cart
  calls: [catalog, inventory]
  cache: true
- name: order
  calls: [catalog, inventory, cart]
{{- end }}

{{/* The services' names. */}}
{{- define "emporium.serviceNames" -}}
{{- range (include "emporium.services" . | fromYamlArray) }}
- {{ .name }}
{{- end }}
{{- end }}

{{/* What each service calls. */}}
{{- define "emporium.calls" -}}
{{- range (include "emporium.services" . | fromYamlArray) }}
{{ .name }}: {{ .calls | toJson }}
{{- end }}
{{- end }}

{{/* Who calls each service; null means anyone (the way in). */}}
{{- define "emporium.callers" -}}
{{- $services := include "emporium.services" . | fromYamlArray }}
{{- range $callee := $services }}
{{- if $callee.public }}
{{ $callee.name }}: null
{{- else }}
{{- $from := list }}
{{- range $caller := $services }}
{{- if has $callee.name $caller.calls }}
{{- $from = append $from $caller.name }}
{{- end }}
{{- end }}
{{ $callee.name }}: {{ $from | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/* What uses the cache: the services that do, and the setup job, whose `seed` retires the
catalog's cached listings. */}}
{{- define "emporium.cached" -}}
{{- $cached := list }}
{{- range (include "emporium.services" . | fromYamlArray) }}
{{- if .cache }}
{{- $cached = append $cached .name }}
{{- end }}
{{- end }}
{{- append $cached "setup" | toJson }}
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
