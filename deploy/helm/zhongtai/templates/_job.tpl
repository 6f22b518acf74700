{{/*
A pre-install/pre-upgrade hook Job running one `zt` command with the hook ConfigMap.
Args: ctx, component, args (list), job (the values block), weight, password (bool).
The pod runs with the namespace's default ServiceAccount: the chart's own ServiceAccount
does not exist yet when a pre-install hook runs.
*/}}
{{- define "zhongtai.hookJob" -}}
{{- $ctx := .ctx }}
{{- $hooks := include "zhongtai.componentName" (dict "ctx" $ctx "component" "hooks") }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "zhongtai.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "zhongtai.componentLabels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ .weight | quote }}
    # Kept after success for its logs (until ttlSecondsAfterFinished); replaced by the next run.
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: {{ .job.backoffLimit }}
  activeDeadlineSeconds: {{ .job.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ .job.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "zhongtai.podLabels" . | nindent 8 }}
      annotations:
        {{- include "zhongtai.podAnnotations" (dict "ctx" $ctx) | nindent 8 }}
    spec:
      {{- include "zhongtai.podCommon" (dict "ctx" $ctx "serviceAccountName" "default") | nindent 6 }}
      restartPolicy: Never
      containers:
        - name: {{ .component }}
          image: {{ include "zhongtai.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args:
            - --config
            - /etc/zhongtai/zhongtai.toml
            {{- toYaml .args | nindent 12 }}
          {{- with include "zhongtai.env" (dict "ctx" $ctx "salt" false "password" .password "secretName" ($ctx.Values.secrets.existingSecret | default $hooks)) }}
          env:
            {{- . | trim | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml .job.resources | nindent 12 }}
          securityContext:
            {{- toYaml $ctx.Values.securityContext | nindent 12 }}
          {{- include "zhongtai.volumeMounts" $ctx | nindent 10 }}
      {{- include "zhongtai.volumes" (dict "configMap" $hooks) | nindent 6 }}
{{- end }}
