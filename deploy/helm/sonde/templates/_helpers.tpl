{{/* The collector URL the agents stream to. */}}
{{- define "sonde.collectorUrl" -}}
{{- if .Values.agent.collectorUrl -}}
{{- .Values.agent.collectorUrl -}}
{{- else -}}
https://sonde-collector.{{ .Release.Namespace }}.svc:{{ .Values.collector.grpcPort }}
{{- end -}}
{{- end -}}
