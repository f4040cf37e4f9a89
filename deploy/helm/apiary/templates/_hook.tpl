{{/* Objects the pre-install migration Job needs exist before it: hooks of a lower weight.
     Helm keeps them after the hook (no hook-succeeded policy) and replaces them on upgrade. */}}
{{- define "apiary.preHookAnnotations" -}}
{{- if .Values.migrations.enabled }}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}
{{- end -}}
