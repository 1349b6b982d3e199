{{/* Chart name, truncated to 63 characters. */}}
{{- define "namegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Truncated to 55 so that suffixes such as "-metrics" and "-migrate"
still give valid names.
*/}}
{{- define "namegate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "namegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "namegate.labels" -}}
helm.sh/chart: {{ include "namegate.chart" . }}
{{ include "namegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: namegate
{{- end }}

{{/* Selector labels of the gateway pods (immutable in the Deployment: never change them). */}}
{{- define "namegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "namegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "namegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "namegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "namegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* The auth mode, validated. */}}
{{- define "namegate.auth" -}}
{{- $auth := .Values.auth | toString }}
{{- if not (has $auth (list "kubernetes" "none")) }}
{{- fail (printf "auth must be \"kubernetes\" or \"none\", not %q" $auth) }}
{{- end }}
{{- $auth }}
{{- end }}

{{/* "sqlite" when audit.url names an embedded store, "url" for another URL, "secret" otherwise. */}}
{{- define "namegate.auditMode" -}}
{{- $url := .Values.audit.url | toString }}
{{- if hasPrefix "sqlite://" $url }}sqlite
{{- else if $url }}
{{- if not (or (hasPrefix "postgres://" $url) (hasPrefix "postgresql://" $url)) }}
{{- fail (printf "audit.url must start with sqlite://, postgres:// or postgresql://, not %q" $url) }}
{{- end }}url
{{- else }}
{{- if not .Values.audit.existingSecret }}
{{- fail "set audit.existingSecret (a Secret holding the PostgreSQL URL, production) or audit.url (e.g. sqlite:///var/lib/namegate/audit.db, single replica/demo)" }}
{{- end }}secret
{{- end }}
{{- end }}

{{/* The env var carrying the audit store URL. */}}
{{- define "namegate.auditUrlEnv" -}}
- name: NAMEGATE_AUDIT_URL
{{- if .Values.audit.url }}
  value: {{ .Values.audit.url | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.audit.existingSecret | quote }}
      key: {{ required "audit.existingSecretKey is required" .Values.audit.existingSecretKey | quote }}
{{- end }}
{{- end }}

{{- define "namegate.terminationGracePeriodSeconds" -}}
{{- /* shutdown delay, then the request drain and the final occurrence flush, each up to drainTimeout */}}
{{- $min := add (int .Values.gateway.shutdownDelaySeconds) (mul 2 (int .Values.gateway.drainTimeoutSeconds)) }}
{{- $v := .Values.terminationGracePeriodSeconds }}
{{- if or (kindIs "invalid" $v) (eq (toString $v) "") }}
{{- add $min 10 }}
{{- else }}
{{- $t := int $v }}
{{- if le $t $min }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed gateway.shutdownDelaySeconds + 2 × gateway.drainTimeoutSeconds (%d)" $t $min) }}
{{- end }}
{{- $t }}
{{- end }}
{{- end }}

{{- define "namegate.dataVolumeClaim" -}}
{{- default (printf "%s-data" (include "namegate.fullname" .)) .Values.storage.persistence.existingClaim }}
{{- end }}

{{/*
The gateway's Service name: `service.name` (e.g. kubernaut's `gateway-service`, docs/cutover.md) or the
full name. The gateway's SubjectAccessReview (`auth-service-name`) and the caller ClusterRoles name it.
*/}}
{{- define "namegate.serviceName" -}}
{{- .Values.service.name | default (include "namegate.fullname" .) }}
{{- end }}
