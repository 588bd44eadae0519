{{/* Names, labels and the wiring between services, shared by every template. */}}

{{- define "rosemesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: fullname-component. */}}
{{- define "rosemesh.componentName" -}}
{{- printf "%s-%s" (include "rosemesh.fullname" .root) .component -}}
{{- end -}}

{{- define "rosemesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: rosemesh
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "rosemesh.selectorLabels" . }}
{{- end -}}

{{- define "rosemesh.selectorLabels" -}}
app.kubernetes.io/name: rosemesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rosemesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Qdrant server URL for the experience pool: the cluster in this release, an external one, or "". */}}
{{- define "rosemesh.qdrantUrl" -}}
{{- if .Values.qdrant.enabled -}}
{{- printf "http://%s-qdrant:6333" .Release.Name -}}
{{- else -}}
{{- .Values.externalQdrant.url -}}
{{- end -}}
{{- end -}}

{{/*
Settings the chart wires itself (ports, binding, addresses of the other services and backends),
as {SETTING: value}. A service's own `config` overrides them.
*/}}
{{- define "rosemesh.wiredConfig" -}}
{{- $root := .root -}}
{{- $spec := index $root.Values.services .component -}}
{{- $wired := dict "host" "0.0.0.0" "port" $spec.port "metrics_port" $spec.metricsPort "models_dir" "/var/cache/rosemesh/models" -}}
{{- with $spec.httpPort -}}
{{- $_ := set $wired "http_port" . -}}
{{- end -}}
{{- if has .component (list "experience" "multilabel" "critique") -}}
{{- $_ := set $wired "embedding_target" (printf "dns:///%s:%v" (include "rosemesh.componentName" (dict "root" $root "component" "embedding")) $root.Values.services.embedding.port) -}}
{{- end -}}
{{- if and $root.Values.triton.enabled (has .component (list "embedding" "earlyexit")) -}}
{{- $_ := set $wired "backend" "triton" -}}
{{- $_ := set $wired "triton_url" (printf "%s:8001" (include "rosemesh.componentName" (dict "root" $root "component" "triton"))) -}}
{{- end -}}
{{- with $root.Values.security.auth -}}
{{- if .enabled -}}
{{- $_ := set $wired "auth_tokens_file" "/etc/rosemesh/auth/tokens" -}}
{{- end -}}
{{- end -}}
{{- with $root.Values.security.tls -}}
{{- if .enabled -}}
{{- $_ := set $wired "tls_cert_file" "/etc/rosemesh/tls/tls.crt" -}}
{{- $_ := set $wired "tls_key_file" "/etc/rosemesh/tls/tls.key" -}}
{{- $_ := set $wired "tls_ca_file" "/etc/rosemesh/tls/ca.crt" -}}
{{- $_ := set $wired "tls_require_client_cert" .requireClientCert -}}
{{- end -}}
{{- end -}}
{{- if eq .component "experience" -}}
{{- $url := include "rosemesh.qdrantUrl" $root -}}
{{- if $url -}}
{{- $_ := set $wired "storage" "qdrant" -}}
{{- $_ := set $wired "qdrant_url" $url -}}
{{- $_ := set $wired "qdrant_collection" $root.Values.externalQdrant.collection -}}
{{- else -}}
{{- $_ := set $wired "data_dir" "/var/lib/rosemesh/experience" -}}
{{- end -}}
{{- end -}}
{{- toYaml (merge (deepCopy $spec.config) $wired) -}}
{{- end -}}

{{/* The Secret holding the experience service's Qdrant API key, as {name, key}; {} for none. */}}
{{- define "rosemesh.qdrantApiKeySecret" -}}
{{- if and .Values.qdrant.enabled .Values.qdrant.apiKey -}}
{{- toYaml (dict "name" (printf "%s-qdrant-apikey" .Release.Name) "key" "api-key") -}}
{{- else if .Values.externalQdrant.apiKeySecret -}}
{{- toYaml .Values.externalQdrant.apiKeySecret -}}
{{- else -}}
{{- toYaml dict -}}
{{- end -}}
{{- end -}}

{{/* Secret settings, as {SETTING: value}: the service's secretConfig, plus the Qdrant API key. */}}
{{- define "rosemesh.secretConfig" -}}
{{- $root := .root -}}
{{- $spec := index $root.Values.services .component -}}
{{- $secret := deepCopy $spec.secretConfig -}}
{{- if and (eq .component "experience") $root.Values.externalQdrant.apiKey -}}
{{- $_ := set $secret "qdrant_api_key" $root.Values.externalQdrant.apiKey -}}
{{- end -}}
{{- toYaml $secret -}}
{{- end -}}

{{- /* The security a service's pod and its training Job share: the outbound token, the tokens
file and the TLS certificates, where the wired settings point. */ -}}
{{- define "rosemesh.securityEnv" -}}
{{- if .root.Values.security.auth.enabled }}
- name: {{ printf "ROSEMESH_%s_OUTBOUND_TOKEN" (upper .component) }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.security.auth.existingSecret }}
      key: outbound-token
      optional: true
{{- end }}
{{- end -}}

{{- define "rosemesh.securityMounts" -}}
{{- if .Values.security.auth.enabled }}
- name: tenant-tokens
  mountPath: /etc/rosemesh/auth
  readOnly: true
{{- end }}
{{- if .Values.security.tls.enabled }}
- name: tls
  mountPath: /etc/rosemesh/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "rosemesh.securityVolumes" -}}
{{- if .Values.security.auth.enabled }}
- name: tenant-tokens
  secret:
    secretName: {{ .Values.security.auth.existingSecret }}
    items:
      - {key: tokens, path: tokens}
{{- end }}
{{- if .Values.security.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.security.tls.existingSecret }}
{{- end }}
{{- end -}}
