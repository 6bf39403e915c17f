{{- define "hubcap.labels" -}}
app.kubernetes.io/name: hubcap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "hubcap.selector" -}}
app.kubernetes.io/name: hubcap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every address, not only loopback: what a Service can reach. */}}
{{- define "hubcap.grpcOnEveryAddress" -}}
{{- $host := splitList ":" .Values.grpc.listen | initial | join ":" -}}
{{- if or (eq $host "") (eq $host "0.0.0.0") (eq $host "[::]") -}}true{{- end -}}
{{- end }}
