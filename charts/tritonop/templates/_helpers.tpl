{{/* The app name: the selector label app.kubernetes.io/name. */}}
{{- define "tritonop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 55 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: the release name when it contains the app name, else <release>-<app>; at most
55 characters, so that <fullname>-metrics (a Service) fits 63. */}}
{{- define "tritonop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "tritonop.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tritonop.namespace" -}}
{{- .Values.namespace.name -}}
{{- end -}}

{{/* Helm's labels, on every object the chart makes (the only labels the kustomize install lacks). */}}
{{- define "tritonop.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "tritonop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonop.name" . }}
{{- end -}}

{{- define "tritonop.labels" -}}
{{ include "tritonop.selectorLabels" . }}
{{ include "tritonop.helmLabels" . }}
{{- end -}}

{{- define "tritonop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Cross-value rules the schema cannot say well; each failure names the values.
*/}}
{{- define "tritonop.validate" -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicas) 1) -}}
{{- fail (printf "replicas: %d needs leaderElection.enabled: true (without leader election run exactly one operator process)" (int .Values.replicas)) -}}
{{- end -}}
{{- $le := .Values.leaderElection -}}
{{- $lease := ternary 15.0 $le.leaseDuration (kindIs "invalid" $le.leaseDuration) | float64 -}}
{{- $renew := ternary 10.0 $le.renewDeadline (kindIs "invalid" $le.renewDeadline) | float64 -}}
{{- $retry := ternary 2.0 $le.retryPeriod (kindIs "invalid" $le.retryPeriod) | float64 -}}
{{- if and $le.enabled (not (and (lt $retry $renew) (lt $renew $lease))) -}}
{{- fail (printf "leaderElection needs retryPeriod < renewDeadline < leaseDuration, got leaderElection.retryPeriod %v, renewDeadline %v, leaseDuration %v (unset ones are the operator's defaults 2, 10, 15)" $retry $renew $lease) -}}
{{- end -}}
{{- if eq (int .Values.metrics.port) (int .Values.livenessPort) -}}
{{- fail (printf "metrics.port and livenessPort must differ, both are %d" (int .Values.metrics.port)) -}}
{{- end -}}
{{- end -}}
