{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, or release-chart when the release name does not contain the chart name. */}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.authority.fullname" -}}{{ include "tollgate.fullname" . }}-authority{{- end -}}
{{- define "tollgate.injector.fullname" -}}{{ include "tollgate.fullname" . }}-injector{{- end -}}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tollgate.authority.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: authority
{{- end -}}

{{- define "tollgate.injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{/* The one tollgate image (every role is a subcommand of the same binary). */}}
{{- define "tollgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.authority.serviceAccountName" -}}
{{- if .Values.authority.serviceAccount.create -}}
{{- default (include "tollgate.authority.fullname" .) .Values.authority.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.authority.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.injector.serviceAccountName" -}}
{{- if .Values.injector.serviceAccount.create -}}
{{- default (include "tollgate.injector.fullname" .) .Values.injector.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.injector.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Restricted pod security context (Pod Security Standard "restricted"). */}}
{{- define "tollgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsUser }}
fsGroup: {{ .Values.securityContext.runAsUser }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tollgate.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsUser }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The authority's in-cluster gRPC address, what injected sidecars connect to by default. */}}
{{- define "tollgate.authority.address" -}}
{{- if .Values.injector.defaults.authority -}}
{{- .Values.injector.defaults.authority -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "tollgate.authority.fullname" .) .Release.Namespace (int .Values.authority.service.grpcPort) -}}
{{- end -}}
{{- end -}}

{{/* Names of the injector's TLS Secret and (cert-manager) Certificate. */}}
{{- define "tollgate.injector.tlsSecretName" -}}{{ include "tollgate.injector.fullname" . }}-tls{{- end -}}

{{/* Secret holding the PostgreSQL URL. */}}
{{- define "tollgate.authority.postgresSecretName" -}}
{{- default (printf "%s-postgres" (include "tollgate.authority.fullname" .)) .Values.authority.store.postgres.existingSecret -}}
{{- end -}}
