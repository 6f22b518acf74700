{{/*
The configuration file every `zt` process reads, rendered to TOML from `.Values.config`
plus the keys the chart owns. Sections and keys are written in sorted order, plain keys
before sub-tables, so the same values always give the same bytes (and the same checksum
annotation).
*/}}

{{/* A TOML key: bare when it can be, quoted otherwise ("zt.events.tracking", "security.protocol"). */}}
{{- define "zhongtai.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
One value in inline form. YAML numbers reach templates as float64: whole ones are written
as integers (so 33554432 does not become 3.3554432e+07). JSON string escapes are valid
TOML basic-string escapes.
*/}}
{{- define "zhongtai.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ ternary "true" "false" $v }}
{{- else if kindIs "float64" $v }}{{ if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}
{{- $parts := list }}
{{- range $v }}{{ $parts = append $parts (include "zhongtai.toml.value" .) }}{{ end }}
{{- printf "[%s]" (join ", " $parts) }}
{{- else if kindIs "map" $v }}
{{- $parts := list }}
{{- range $k := keys $v | sortAlpha }}
{{- $parts = append $parts (printf "%s = %s" (include "zhongtai.toml.key" $k) (include "zhongtai.toml.value" (index $v $k))) }}
{{- end }}
{{- printf "{ %s }" (join ", " $parts) }}
{{- else if kindIs "invalid" $v }}
{{- fail "config: a null value cannot be written to TOML; leave the key out instead" }}
{{- else }}
{{- fail (printf "config: cannot write a %s to TOML" (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* A table and its sub-tables. Args: path (list of keys), table (map). */}}
{{- define "zhongtai.toml.table" -}}
{{- $t := .table }}
{{- $path := .path }}
{{- $header := list }}
{{- range $path }}{{ $header = append $header (include "zhongtai.toml.key" .) }}{{ end -}}
[{{ join "." $header }}]
{{- range $k := keys $t | sortAlpha }}
{{- $v := index $t $k }}
{{- if not (kindIs "map" $v) }}
{{ include "zhongtai.toml.key" $k }} = {{ include "zhongtai.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $t | sortAlpha }}
{{- $v := index $t $k }}
{{- if kindIs "map" $v }}

{{ include "zhongtai.toml.table" (dict "path" (append $path $k) "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The effective config map: .Values.config with the chart-owned keys set. */}}
{{- define "zhongtai.configDict" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- range $section := list "kafka" "clickhouse" "admin" "ingest" "pii" }}
{{- if not (kindIs "map" (get $cfg $section)) }}{{ $_ := set $cfg $section dict }}{{ end }}
{{- end }}
{{- $owned := dict "kafka" (list "bootstrap_servers") "clickhouse" (list "url" "password") "admin" (list "listen") "ingest" (list "listen") "pii" (list "salt") }}
{{- range $section, $ks := $owned }}
{{- range $k := $ks }}
{{- if hasKey (get $cfg $section) $k }}
{{- fail (printf "config.%s.%s is set by the chart: use %s" $section $k (get (dict "bootstrap_servers" "kafka.bootstrapServers" "url" "clickhouse.url" "password" "secrets.clickhousePassword or secrets.existingSecret" "listen" "admin.port / ingest.port" "salt" "secrets.piiSalt or secrets.existingSecret") $k)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $cfg.kafka "bootstrap_servers" (required "kafka.bootstrapServers is required (comma-separated host:port list)" .Values.kafka.bootstrapServers) }}
{{- $_ := set $cfg.clickhouse "url" (required "clickhouse.url is required (the HTTP interface, http://host:8123)" .Values.clickhouse.url) }}
{{- $_ := set $cfg.admin "listen" (printf "0.0.0.0:%d" (int .Values.admin.port)) }}
{{- $_ := set $cfg.ingest "listen" (printf "0.0.0.0:%d" (int .Values.ingest.port)) }}
{{- toJson $cfg }}
{{- end }}

{{/* The TOML file itself. */}}
{{- define "zhongtai.configToml" -}}
{{- $cfg := include "zhongtai.configDict" . | fromJson -}}
# zhongtai configuration rendered by the Helm chart from .Values.config; every key left out
# keeps its default (config/defaults.toml). Secrets come from the environment
# (ZT__PII__SALT, ZT__CLICKHOUSE__PASSWORD), never from this file.
{{- range $section := keys $cfg | sortAlpha }}

{{ include "zhongtai.toml.table" (dict "path" (list $section) "table" (index $cfg $section)) }}
{{- end }}
{{ end }}
