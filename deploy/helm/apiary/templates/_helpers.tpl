{{- define "apiary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "apiary.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "apiary.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "apiary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component (api, worker, migrations). */}}
{{- define "apiary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apiary.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "apiary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "apiary.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when image.digest is set (the pipeline sets it). */}}
{{- define "apiary.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the pods read: Key Vault's synced one, or the existing one. Called with
     (dict "root" $ "migrate" bool): the migration Job has hook copies of its own. */}}
{{- define "apiary.secretName" -}}
{{- $root := .root -}}
{{- if $root.Values.secrets.keyVault.enabled -}}
{{- printf "%s-keyvault%s" (include "apiary.fullname" $root) (ternary "-migrate" "" .migrate) -}}
{{- else -}}
{{- required "secrets.existingSecret is required when secrets.keyVault.enabled is false" $root.Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Suffix of the objects only the migration Job uses (hooks, so they exist before it). */}}
{{- define "apiary.suffix" -}}
{{- ternary "-migrate" "" .migrate -}}
{{- end -}}

{{/* Every key the pods read from the Secret: secrets.keys (non-empty) and extraEnv. */}}
{{- define "apiary.secretKeys" -}}
{{- $keys := list -}}
{{- range $field, $key := .Values.secrets.keys }}{{ if $key }}{{ $keys = append $keys $key }}{{ end }}{{ end -}}
{{- range $env, $key := .Values.secrets.extraEnv }}{{ $keys = append $keys $key }}{{ end -}}
{{- $keys | uniq | toJson -}}
{{- end -}}

{{/* Pod labels: selector labels, plus the workload identity label when it is on. */}}
{{- define "apiary.podLabels" -}}
{{ include "apiary.selectorLabels" . }}
{{- if .root.Values.serviceAccount.workloadIdentity.enabled }}
azure.workload.identity/use: "true"
{{- end }}
{{- end -}}

{{/* The environment every Apiary container gets. */}}
{{- define "apiary.env" -}}
{{- $root := .root -}}
{{- $secret := include "apiary.secretName" . -}}
{{- if and (not $root.Values.settings.qdrantUrl) (or $root.Values.worker.enabled $root.Values.api.autoscaling.enabled (gt (int $root.Values.api.replicas) 1)) -}}
{{- fail "settings.qdrantUrl is required with more than one Apiary pod: Qdrant's local mode admits one process (set it, or run one API replica without workers or autoscaling)" -}}
{{- end -}}
- name: APIARY_ENVIRONMENT
  value: {{ $root.Values.settings.environment | quote }}
- name: APIARY_LOG_LEVEL
  value: {{ $root.Values.settings.logLevel | quote }}
- name: APIARY_BOOTSTRAP_ADMIN_EMAIL
  value: {{ $root.Values.settings.bootstrapAdminEmail | quote }}
- name: APIARY_RUNNER
  value: {{ ternary "celery" "inprocess" $root.Values.worker.enabled | quote }}
- name: APIARY_PORT
  value: {{ $root.Values.api.port | quote }}
{{- if $root.Values.settings.qdrantUrl }}
- name: APIARY_QDRANT_URL
  value: {{ $root.Values.settings.qdrantUrl | quote }}
{{- end }}
{{- if $root.Values.settings.trustedProxies }}
- name: APIARY_TRUSTED_PROXIES
  value: {{ $root.Values.settings.trustedProxies | quote }}
{{- end }}
{{- with $root.Values.settings.otel }}
{{- if .endpoint }}
- name: APIARY_OTEL__ENDPOINT
  value: {{ .endpoint | quote }}
- name: APIARY_OTEL__SAMPLING_RATIO
  value: {{ .samplingRatio | toString | quote }}
- name: APIARY_OTEL__SERVICE_NAME
  value: {{ ternary (printf "%s-worker" .serviceName) .serviceName (eq $.component "worker") | quote }}
{{- end }}
{{- end }}
{{- if $root.Values.config }}
- name: APIARY_CONFIG
  value: /etc/apiary/config.yaml
{{- end }}
- name: APIARY_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.databaseUrl }}}
- name: APIARY_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.redisUrl }}}
- name: APIARY_JWT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.jwtSecret }}}
{{- if $root.Values.secrets.keys.qdrantApiKey }}
- name: APIARY_QDRANT_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.qdrantApiKey }}}
{{- end }}
{{- if $root.Values.secrets.keys.metricsToken }}
- name: APIARY_METRICS_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.metricsToken }}}
{{- end }}
{{- if and $root.Values.settings.otel.endpoint $root.Values.secrets.keys.otelHeaders }}
- name: APIARY_OTEL__HEADERS
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.otelHeaders }}}
{{- end }}
{{- if $root.Values.secrets.keys.sentryDsn }}
- name: APIARY_SENTRY_DSN
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.secrets.keys.sentryDsn }}}
{{- end }}
{{- range $env, $key := $root.Values.secrets.extraEnv }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $key }}}
{{- end }}
{{- end -}}

{{/* The OTLP collector's port, from settings.otel.endpoint (explicit, or by scheme). */}}
{{- define "apiary.otelPort" -}}
{{- $url := urlParse .Values.settings.otel.endpoint -}}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $url.host) -}}
{{- $port | default (ternary "443" "80" (eq $url.scheme "https")) -}}
{{- end -}}

{{/* Volumes every Apiary pod mounts: scratch space (read-only root), config, Key Vault. */}}
{{- define "apiary.volumes" -}}
{{- $root := .root -}}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 256Mi}
- name: data
  emptyDir: {sizeLimit: 1Gi}
{{- if $root.Values.config }}
- name: config
  configMap:
    name: {{ include "apiary.fullname" $root }}-config{{ include "apiary.suffix" . }}
{{- end }}
{{- if $root.Values.secrets.keyVault.enabled }}
- name: keyvault
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ include "apiary.fullname" $root }}{{ include "apiary.suffix" . }}
{{- end }}
{{- end -}}

{{- define "apiary.volumeMounts" -}}
{{- $root := .root -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/apiary
{{- if $root.Values.config }}
- name: config
  mountPath: /etc/apiary
  readOnly: true
{{- end }}
{{- if $root.Values.secrets.keyVault.enabled }}
- name: keyvault
  mountPath: /mnt/secrets-store
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the API, the workers and the migration Job. */}}
{{- define "apiary.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "apiary.serviceAccountName" $root }}{{ if $root.Values.serviceAccount.create }}{{ include "apiary.suffix" . }}{{ end }}
# No Kubernetes API access is needed; Azure workload identity projects its own token volume.
automountServiceAccountToken: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
