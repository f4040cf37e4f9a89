{{/* The variants of an object the pods need: the release's own, and when migrations are on
     a hook copy for the migration Job (pre-install, pre-upgrade, before it by weight). A
     hook copy is replaced on every upgrade, which the release's pods never notice. */}}
{{- define "apiary.variants" -}}
{{- if .Values.migrations.enabled -}}[false, true]{{- else -}}[false]{{- end -}}
{{- end -}}

{{- define "apiary.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation
{{- end -}}
