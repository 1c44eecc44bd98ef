{{- define "strata.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "strata.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "strata.config" -}}
{{- $base := dict "server" (dict "http_listen_address" "0.0.0.0" "http_listen_port" 9009 "grpc_listen_address" "0.0.0.0" "grpc_listen_port" 9095) -}}
{{- if eq .Values.mode "microservices" -}}
{{- /* Each workload passes its role as --target. */ -}}
{{- $_ := set $base "ring" (dict "kvstore" (dict "store" "etcd" "etcd" (dict "endpoints" .Values.etcd.endpoints))) -}}
{{- $_ := set $base "storage" .Values.store.storage -}}
{{- $_ := set $base "schema" .Values.store.schema -}}
{{- $_ := set $base "ingester" (dict "lifecycler" (dict "id" "${POD_NAME}" "addr" (printf "${POD_NAME}.%s-ingester.${POD_NAMESPACE}.svc:9095" (include "strata.fullname" .)))) -}}
{{- else -}}
{{- $_ := set $base "target" "all" -}}
{{- end -}}
{{- toYaml (mergeOverwrite $base .Values.config) -}}
{{- end -}}

{{- define "strata.env" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- end -}}
