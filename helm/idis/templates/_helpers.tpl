{{/* The node's name: IDIS_NAME, labels. */}}
{{- define "idis.name" -}}
{{ .Values.name | default .Release.Name }}
{{- end }}

{{- define "idis.labels" -}}
app.kubernetes.io/name: idis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
idis.example/role: {{ .Values.role }}
{{- end }}

{{- define "idis.selector" -}}
app.kubernetes.io/name: idis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "idis.secretName" -}}
{{ .Values.secrets.existingSecret | default (printf "%s-credentials" .Release.Name) }}
{{- end }}

{{- define "idis.scope" -}}
{{ .Values.patroni.scope | default .Release.Name }}
{{- end }}

{{/* Patroni's pods: the labels its Kubernetes DCS finds the cluster's members by. */}}
{{- define "idis.patroniLabels" -}}
app.kubernetes.io/name: patroni
app.kubernetes.io/instance: {{ .Release.Name }}
cluster-name: {{ include "idis.scope" . }}
{{- end }}

{{/*
The environment of idis, shared by its pods and the migration Job. Writes go through every
member with target_session_attrs=read-write (libpq finds the leader); reads go to this site's
own members first.
*/}}
{{- define "idis.env" -}}
- name: IDIS_ROLE
  value: {{ .Values.role | quote }}
- name: IDIS_NAME
  value: {{ include "idis.name" . | quote }}
- name: IDIS_DATA_DIR
  value: /data
{{- if or .Values.database.url .Values.patroni.enabled }}
- name: IDIS_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "idis.secretName" . }}, key: database-password}
{{- end }}
{{- if .Values.database.url }}
- name: IDIS_DATABASE_URL
  value: {{ .Values.database.url | quote }}
{{- with .Values.database.readUrl }}
- name: IDIS_DATABASE_READ_URL
  value: {{ . | quote }}
{{- end }}
{{- else if .Values.patroni.enabled }}
- name: IDIS_DATABASE_URL
  value: "postgresql://{{ .Values.database.user }}:$(IDIS_DATABASE_PASSWORD)@{{ if eq .Values.patroni.dcs "kubernetes" }}{{ .Release.Name }}-patroni-leader:5432{{ else }}{{ .Release.Name }}-patroni-0.{{ .Release.Name }}-patroni-members:5432{{ end }}{{ range .Values.patroni.peers }},{{ . }}{{ end }}/{{ .Values.database.name }}?target_session_attrs=read-write"
- name: IDIS_DATABASE_READ_URL
  value: "postgresql://{{ .Values.database.user }}:$(IDIS_DATABASE_PASSWORD)@{{ .Release.Name }}-patroni:5432{{ range .Values.patroni.peers }},{{ . }}{{ end }}/{{ .Values.database.name }}"
{{- end }}
{{- if .Values.redis.url }}
- name: IDIS_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- else if .Values.redis.enabled }}
- name: IDIS_REDIS_URL
  value: "redis://{{ .Release.Name }}-redis:6379/0"
{{- end }}
# Secrets are sealed with this key (registry/secrets.py): every pod of the release, and every
# site of one registry, must hold the same one, and it must outlive the pods.
- name: IDIS_SECRET_KEY_FILE
  value: /secrets/sealing-key
- name: IDIS_FEDERATION__SECRET
  valueFrom:
    secretKeyRef: {name: {{ include "idis.secretName" . }}, key: federation-secret, optional: true}
{{- if .Values.secrets.holderSecret }}
- name: IDIS_FEDERATION__HOLDER_SECRET_FILE
  value: /secrets/holder-secret
{{- end }}
- name: IDIS_FEDERATION__TOP_LEVEL
  value: {{ .Values.federation.topLevel | toJson | quote }}
{{- with .Values.federation.siteUrl }}
- name: IDIS_FEDERATION__SITE_URL
  value: {{ . | quote }}
{{- end }}
- name: IDIS_FEDERATION__ALLOW_RECURSION
  value: {{ .Values.federation.allowRecursion | quote }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
