{{/* The collector URL the agents stream to. */}}
{{- define "sonde.collectorUrl" -}}
{{- if .Values.agent.collectorUrl -}}
{{- .Values.agent.collectorUrl -}}
{{- else -}}
https://sonde-collector.{{ .Release.Namespace }}.svc:{{ .Values.collector.grpcPort }}
{{- end -}}
{{- end -}}

{{/* Whether the collector (else the agents) writes to the remote-write stores. */}}
{{- define "sonde.remoteWriteFrom" -}}
{{- if .Values.remoteWrite.urls -}}
{{- if and .Values.collector.enabled (ne .Values.remoteWrite.from "agents") -}}
collector
{{- else -}}
agents
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Remote-write flags (README "Fleet storage"); header values come from
     Secrets through the environment (Kubernetes expands $(VAR) in args). */}}
{{- define "sonde.remoteWriteArgs" -}}
{{- range .Values.remoteWrite.urls }}
- --remote-write-url={{ . }}
{{- end }}
{{- range $i, $h := .Values.remoteWrite.headers }}
- --remote-write-header={{ $h.name }}=$(SONDE_REMOTE_WRITE_HEADER_{{ $i }})
{{- end }}
{{- if .Values.remoteWrite.tlsSecret }}
- --remote-write-tls-ca=/etc/sonde/remote-write-tls/ca.crt
{{- if .Values.remoteWrite.clientCertificate }}
- --remote-write-tls-cert=/etc/sonde/remote-write-tls/tls.crt
- --remote-write-tls-key=/etc/sonde/remote-write-tls/tls.key
{{- end }}
{{- end }}
- --remote-write-queue-max-bytes={{ int64 .Values.remoteWrite.queueMaxBytes }}
{{- end -}}

{{- define "sonde.remoteWriteEnv" -}}
{{- range $i, $h := .Values.remoteWrite.headers }}
- name: SONDE_REMOTE_WRITE_HEADER_{{ $i }}
  valueFrom:
    secretKeyRef:
      name: {{ $h.secret }}
      key: {{ $h.key }}
{{- end }}
{{- end -}}

{{- define "sonde.remoteWriteMount" -}}
{{- if .Values.remoteWrite.tlsSecret }}
- name: remote-write-tls
  mountPath: /etc/sonde/remote-write-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "sonde.remoteWriteVolume" -}}
{{- if .Values.remoteWrite.tlsSecret }}
- name: remote-write-tls
  secret:
    secretName: {{ .Values.remoteWrite.tlsSecret }}
{{- end }}
{{- end -}}
