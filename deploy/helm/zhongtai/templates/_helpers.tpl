{{/*
Names, labels and the pieces every zhongtai pod shares.
*/}}

{{- define "zhongtai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zhongtai.fullname" -}}
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

{{/* The name of one component's objects: <fullname>-<component>. Args: ctx, component. */}}
{{- define "zhongtai.componentName" -}}
{{- printf "%s-%s" (include "zhongtai.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zhongtai.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The four recommended app.kubernetes.io labels, plus helm.sh/chart and part-of. */}}
{{- define "zhongtai.labels" -}}
helm.sh/chart: {{ include "zhongtai.chart" . }}
{{ include "zhongtai.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zhongtai
{{- end }}

{{- define "zhongtai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zhongtai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component's objects. Args: ctx, component. */}}
{{- define "zhongtai.componentLabels" -}}
{{ include "zhongtai.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector of one component's pods. Args: ctx, component. */}}
{{- define "zhongtai.componentSelectorLabels" -}}
{{ include "zhongtai.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "zhongtai.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zhongtai.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zhongtai.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the PII salt and the ClickHouse password. */}}
{{- define "zhongtai.secretName" -}}
{{- default (include "zhongtai.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The chart refuses to run without a PII salt: the binary's default is public, and hashes made
with it can be reversed by anyone with a phone-number list.
*/}}
{{- define "zhongtai.requireSalt" -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secrets.piiSalt) }}
{{- fail "a PII salt is required: set secrets.piiSalt (16+ random characters) or secrets.existingSecret" }}
{{- end }}
{{- end }}

{{/*
The largest partition count of any platform topic: a consumer group has no use for more
members than that.
*/}}
{{- define "zhongtai.maxPartitions" -}}
{{- $topics := get .Values.config "topics" | default dict }}
{{- $max := int (get $topics "partitions" | default 4) }}
{{- range $name, $n := (get $topics "partition_overrides" | default dict) }}
{{- if gt (int $n) $max }}{{ $max = int $n }}{{ end }}
{{- end }}
{{- $max }}
{{- end }}

{{/*
The partition count `zt topics create` gives one platform topic: its partition_overrides
entry, else config.topics.partitions. Args: ctx, topic (full name).
*/}}
{{- define "zhongtai.topicPartitions" -}}
{{- $topics := get .ctx.Values.config "topics" | default dict }}
{{- $overrides := get $topics "partition_overrides" | default dict }}
{{- if hasKey $overrides .topic }}
{{- int (get $overrides .topic) }}
{{- else }}
{{- int (get $topics "partitions" | default 4) }}
{{- end }}
{{- end }}

{{/* The topic name prefix (config.topics.prefix, default zt). */}}
{{- define "zhongtai.topicPrefix" -}}
{{- $topics := get .Values.config "topics" | default dict }}
{{- get $topics "prefix" | default "zt" }}
{{- end }}

{{/*
Checks a consumer-group Deployment's replicas against the partitions. Args: ctx, component,
replicas; optional: partitions (the bound; default the largest of any platform topic),
partitionsOf (what the bound counts), valuePath (the value named in the message; default
<component>.replicas).
*/}}
{{- define "zhongtai.checkReplicas" -}}
{{- $max := int (include "zhongtai.maxPartitions" .ctx) }}
{{- if hasKey . "partitions" }}{{ $max = int .partitions }}{{ end }}
{{- $of := .partitionsOf | default "the topics' partitions" }}
{{- $path := .valuePath | default (printf "%s.replicas" .component) }}
{{- if gt (int .replicas) $max }}
{{- fail (printf "%s (%d) exceeds %s (%d): the extra consumer-group members would stay idle and never ready; raise config.topics.partitions (and the topics' real partition count) first" $path (int .replicas) $of $max) }}
{{- end }}
{{- end }}

{{/* Annotations that roll the pods when the configuration or the chart's Secret changes. */}}
{{- define "zhongtai.checksums" -}}
checksum/config: {{ include "zhongtai.configToml" . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ printf "%s\n%s" .Values.secrets.piiSalt .Values.secrets.clickhousePassword | sha256sum }}
{{- end }}
{{- end }}

{{/* Environment of a container. Args: ctx, salt (bool), password (bool). */}}
{{- define "zhongtai.env" -}}
{{- $v := .ctx.Values }}
{{- if .salt }}
- name: ZT__PII__SALT
  valueFrom:
    secretKeyRef:
      name: {{ include "zhongtai.secretName" .ctx }}
      key: {{ $v.secrets.piiSaltKey }}
{{- end }}
{{- if .password }}
- name: ZT__CLICKHOUSE__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | default (include "zhongtai.secretName" .ctx) }}
      key: {{ $v.secrets.clickhousePasswordKey }}
      optional: true
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The three probes on the admin port. */}}
{{- define "zhongtai.probes" -}}
startupProbe:
  httpGet:
    path: /livez
    port: admin
  {{- toYaml .Values.probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /livez
    port: admin
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/* Pod-level fields shared by every pod (after `spec:`). Args: ctx. */}}
{{- define "zhongtai.podCommon" -}}
{{- $v := .ctx.Values -}}
serviceAccountName: {{ .serviceAccountName | default (include "zhongtai.serviceAccountName" .ctx) }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes: the configuration file and a writable /tmp on a read-only root. Args: ctx, configMap. */}}
{{- define "zhongtai.volumes" -}}
volumes:
  - name: config
    configMap:
      name: {{ .configMap }}
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{- define "zhongtai.volumeMounts" -}}
volumeMounts:
  - name: config
    mountPath: /etc/zhongtai
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* Pod annotations: checksums, then global and component ones. Args: ctx, extra. */}}
{{- define "zhongtai.podAnnotations" -}}
{{ include "zhongtai.checksums" .ctx }}
{{- with .ctx.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod labels. Args: ctx, component. */}}
{{- define "zhongtai.podLabels" -}}
{{ include "zhongtai.componentLabels" . }}
{{- with .ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
A long-running consumer-group component (`zt <args>`): the sink and the processors. Args:
ctx, component, args (list), replicas, resources, grace, annotations, salt (bool),
password (bool); optional partitions, partitionsOf, valuePath (see zhongtai.checkReplicas).
*/}}
{{- define "zhongtai.consumerDeployment" -}}
{{- $ctx := .ctx }}
{{- $check := dict "ctx" $ctx "component" .component "replicas" .replicas }}
{{- range $k := list "partitions" "partitionsOf" "valuePath" }}
{{- if hasKey $ $k }}{{ $_ := set $check $k (get $ $k) }}{{ end }}
{{- end }}
{{- include "zhongtai.checkReplicas" $check }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "zhongtai.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "zhongtai.componentLabels" . | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 5
  # Stop one member before starting its replacement: a surge pod would join the group,
  # might be handed no partition, and would then never become ready, stalling the rollout.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 0
      maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "zhongtai.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "zhongtai.podLabels" . | nindent 8 }}
      annotations:
        {{- include "zhongtai.podAnnotations" (dict "ctx" $ctx "extra" .annotations) | nindent 8 }}
    spec:
      {{- include "zhongtai.podCommon" (dict "ctx" $ctx) | nindent 6 }}
      terminationGracePeriodSeconds: {{ .grace }}
      {{- with $ctx.Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "zhongtai.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args:
            - --config
            - /etc/zhongtai/zhongtai.toml
            {{- toYaml .args | nindent 12 }}
          {{- with include "zhongtai.env" (dict "ctx" $ctx "salt" .salt "password" .password) }}
          env:
            {{- . | trim | nindent 12 }}
          {{- end }}
          ports:
            - name: admin
              containerPort: {{ $ctx.Values.admin.port }}
              protocol: TCP
          {{- include "zhongtai.probes" $ctx | nindent 10 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $ctx.Values.securityContext | nindent 12 }}
          {{- include "zhongtai.volumeMounts" $ctx | nindent 10 }}
      {{- include "zhongtai.volumes" (dict "configMap" (include "zhongtai.fullname" $ctx)) | nindent 6 }}
{{- end }}
