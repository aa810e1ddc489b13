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
