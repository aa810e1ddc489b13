{{/*
The chart name, or nameOverride. Also the app.kubernetes.io/name label, which names the
scrape job (ServiceMonitor jobLabel): the alert rules expect "braze-exporter".
*/}}
{{- define "braze-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name, truncated at 63 characters (the DNS name limit). If the release
name contains the chart name, it is used as the full name.
*/}}
{{- define "braze-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "braze-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "braze-exporter.labels" -}}
helm.sh/chart: {{ include "braze-exporter.chart" . }}
{{ include "braze-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "braze-exporter.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "braze-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "braze-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "braze-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "braze-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "braze-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "braze-exporter.secretName" -}}
{{- printf "%s-api-keys" (include "braze-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The folder the config and key files are mounted in. */}}
{{- define "braze-exporter.configDir" -}}
/etc/braze-exporter
{{- end }}

{{/*
Where each workspace's API key comes from, as YAML: a list of
  {workspace, file, secret, secretKey, chartMade}
with `file` relative to the config folder (keys/<name>.key; the exporter resolves a relative
api_key_file against the config file's folder). A key comes from apiKeys.<name> if set (the
chart-made Secret, under the file's base name), else from existingSecret.name under
existingSecret.keys.<name> (default: the workspace name). Every mistake fails the render
with the value to fix.
*/}}
{{- define "braze-exporter.apiKeys" -}}
{{- $workspaces := .Values.config.workspaces | default list }}
{{- $apiKeys := .Values.apiKeys | default dict }}
{{- $existing := .Values.existingSecret | default dict }}
{{- $existingKeys := $existing.keys | default dict }}
{{- $names := dict }}
{{- $files := dict }}
{{- $sources := list }}
{{- range $index, $workspace := $workspaces }}
  {{- $name := $workspace.name }}
  {{- if hasKey $names $name }}
    {{- fail (printf "config.workspaces[%d].name: duplicate workspace name %q" $index $name) }}
  {{- end }}
  {{- $_ := set $names $name true }}
  {{- $base := regexReplaceAll "^[.]" (regexReplaceAll "[^-._a-zA-Z0-9]" $name "_") "_" }}
  {{- $file := printf "%s.key" $base }}
  {{- if hasKey $files $file }}
    {{- fail (printf "config.workspaces[%d].name: %q and %q would share the key file %s; rename one" $index (get $files $file) $name $file) }}
  {{- end }}
  {{- $_ := set $files $file $name }}
  {{- if hasKey $apiKeys $name }}
    {{- if hasKey $existingKeys $name }}
      {{- fail (printf "apiKeys.%s and existingSecret.keys.%s are both set; keep one" $name $name) }}
    {{- end }}
    {{- $sources = append $sources (dict "workspace" $name "file" (printf "keys/%s" $file) "secret" (include "braze-exporter.secretName" $) "secretKey" $file "chartMade" true) }}
  {{- else }}
    {{- if not $existing.name }}
      {{- fail (printf "workspace %q has no API key: set apiKeys.%s, or existingSecret.name (and existingSecret.keys.%s)" $name $name $name) }}
    {{- end }}
    {{- $secretKey := get $existingKeys $name | default $name }}
    {{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $secretKey) }}
      {{- fail (printf "workspace %q: %q is not a valid Secret data key; set existingSecret.keys.%s" $name $secretKey $name) }}
    {{- end }}
    {{- $sources = append $sources (dict "workspace" $name "file" (printf "keys/%s" $file) "secret" $existing.name "secretKey" $secretKey "chartMade" false) }}
  {{- end }}
{{- end }}
{{- range $name := concat (keys $apiKeys) (keys $existingKeys) | sortAlpha }}
  {{- if not (hasKey $names $name) }}
    {{- fail (printf "API key given for workspace %q, which is not in config.workspaces (apiKeys / existingSecret.keys)" $name) }}
  {{- end }}
{{- end }}
{{- toYaml $sources }}
{{- end }}

{{/* The exporter's config file: .Values.config with each workspace's api_key_file set. */}}
{{- define "braze-exporter.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $files := dict }}
{{- range $source := include "braze-exporter.apiKeys" . | fromYamlArray }}
  {{- $_ := set $files $source.workspace $source.file }}
{{- end }}
{{- range $workspace := $config.workspaces }}
  {{- $_ := set $workspace "api_key_file" (get $files $workspace.name) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The folder the web config and the files it names are mounted in. */}}
{{- define "braze-exporter.webDir" -}}
/etc/braze-exporter/web
{{- end }}

{{- define "braze-exporter.webSecretName" -}}
{{- printf "%s-web-config" (include "braze-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
What the web config (webConfig) does, as YAML:
  {enabled, tls, clientCertRequired, basicAuth, chartMade, sources}
enabled: the exporter gets --web.config.file; tls: it serves HTTPS only; clientCertRequired:
its TLS handshake needs a client certificate, which the kubelet's probes can't give;
basicAuth: the chart-made file has users; chartMade: the chart makes the Secret holding
web-config.yml; sources: the Secrets projected into the web folder, each
{secret, items: [{key, path}]} (no items: every key of the Secret). Every mistake fails the
render with the value to fix.
*/}}
{{- define "braze-exporter.web" -}}
{{- $web := .Values.webConfig | default dict }}
{{- $tls := $web.tls | default dict }}
{{- $clientAuth := $tls.clientAuthType | default "NoClientCert" }}
{{- $users := $web.basicAuthUsers | default dict }}
{{- $headers := $web.headers | default dict }}
{{- $tlsSettings := list "secretName" "clientCASecret" "minVersion" "maxVersion" }}
{{- if not $tls.enabled }}
  {{- range $key := $tlsSettings }}
    {{- if get $tls $key }}
      {{- fail (printf "webConfig.tls.%s is set but webConfig.tls.enabled is false: enable TLS or leave it empty" $key) }}
    {{- end }}
  {{- end }}
  {{- if ne $clientAuth "NoClientCert" }}
    {{- fail (printf "webConfig.tls.clientAuthType is %s but webConfig.tls.enabled is false: client certificates need TLS" $clientAuth) }}
  {{- end }}
{{- end }}
{{- if and $tls.minVersion $tls.maxVersion (gt $tls.minVersion $tls.maxVersion) }}
  {{- fail (printf "webConfig.tls.minVersion %s is newer than webConfig.tls.maxVersion %s" $tls.minVersion $tls.maxVersion) }}
{{- end }}
{{- $result := dict
  "enabled" false
  "tls" ($tls.enabled | default false)
  "clientCertRequired" (eq $clientAuth "RequireAndVerifyClientCert")
  "basicAuth" (gt (len $users) 0)
  "chartMade" false
  "sources" list
}}
{{- if $web.existingSecret }}
  {{- range $key := $tlsSettings }}
    {{- if get $tls $key }}
      {{- fail (printf "webConfig.existingSecret and webConfig.tls.%s are both set: keep one (the Secret's web-config.yml says everything)" $key) }}
    {{- end }}
  {{- end }}
  {{- range $key := list "basicAuthUsers" "headers" }}
    {{- if get $web $key }}
      {{- fail (printf "webConfig.existingSecret and webConfig.%s are both set: keep one (the Secret's web-config.yml says everything)" $key) }}
    {{- end }}
  {{- end }}
  {{- $_ := set $result "enabled" true }}
  {{- $_ := set $result "sources" (list (dict "secret" $web.existingSecret)) }}
{{- else if or $tls.enabled $users $headers }}
  {{- $sources := list (dict "secret" (include "braze-exporter.webSecretName" .) "items" (list (dict "key" "web-config.yml" "path" "web-config.yml"))) }}
  {{- if $tls.enabled }}
    {{- if not $tls.secretName }}
      {{- fail "webConfig.tls.enabled needs webConfig.tls.secretName: a kubernetes.io/tls Secret (tls.crt, tls.key), e.g. a cert-manager Certificate's" }}
    {{- end }}
    {{- $sources = append $sources (dict "secret" $tls.secretName "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key"))) }}
    {{- if and (ne $clientAuth "NoClientCert") (not $tls.clientCASecret) }}
      {{- fail (printf "webConfig.tls.clientAuthType %s needs webConfig.tls.clientCASecret: the Secret holding the CA that signs client certificates" $clientAuth) }}
    {{- end }}
    {{- if and $tls.clientCASecret (eq $clientAuth "NoClientCert") }}
      {{- fail "webConfig.tls.clientCASecret is set but webConfig.tls.clientAuthType is NoClientCert: set VerifyClientCertIfGiven or RequireAndVerifyClientCert, or leave clientCASecret empty" }}
    {{- end }}
    {{- if $tls.clientCASecret }}
      {{- $sources = append $sources (dict "secret" $tls.clientCASecret "items" (list (dict "key" ($tls.clientCAKey | default "ca.crt") "path" "client-ca.crt"))) }}
    {{- end }}
  {{- end }}
  {{- $_ := set $result "enabled" true }}
  {{- $_ := set $result "chartMade" true }}
  {{- $_ := set $result "sources" $sources }}
{{- end }}
{{- toYaml $result }}
{{- end }}

{{/*
The chart-made web-config.yml, from webConfig. Its file paths are relative to its own folder
(the exporter resolves them so), where the web volume puts tls.crt, tls.key and client-ca.crt.
*/}}
{{- define "braze-exporter.webConfigFile" -}}
{{- $web := .Values.webConfig }}
{{- $file := dict }}
{{- if $web.tls.enabled }}
  {{- $server := dict
    "cert_file" "tls.crt"
    "key_file" "tls.key"
    "client_auth_type" ($web.tls.clientAuthType | default "NoClientCert")
  }}
  {{- if $web.tls.clientCASecret }}
    {{- $_ := set $server "client_ca_file" "client-ca.crt" }}
  {{- end }}
  {{- with $web.tls.minVersion }}
    {{- $_ := set $server "min_version" . }}
  {{- end }}
  {{- with $web.tls.maxVersion }}
    {{- $_ := set $server "max_version" . }}
  {{- end }}
  {{- $_ := set $file "tls_server_config" $server }}
{{- end }}
{{- with $web.basicAuthUsers }}
  {{- $_ := set $file "basic_auth_users" . }}
{{- end }}
{{- with $web.headers }}
  {{- $_ := set $file "http_server_config" (dict "headers" .) }}
{{- end }}
{{- toYaml $file }}
{{- end }}

{{/* The container and Service port's name: https-metrics when the exporter serves HTTPS only
(a service mesh reads the protocol from it), else http-metrics. */}}
{{- define "braze-exporter.portName" -}}
{{- if (include "braze-exporter.web" . | fromYaml).tls }}https-metrics{{ else }}http-metrics{{ end }}
{{- end }}

{{/*
A probe's check of `path`, given {web (braze-exporter.web), path, port}: an HTTP GET, over
HTTPS with TLS (the kubelet doesn't verify the certificate, and /healthz and /readyz ask for
no user). When the TLS handshake needs a client certificate, which the kubelet can't give,
only the TCP port is checked.
*/}}
{{- define "braze-exporter.probeCheck" -}}
{{- if .web.clientCertRequired }}
tcpSocket:
  port: {{ .port }}
{{- else }}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  {{- if .web.tls }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}
