//! Schemas of orchestrator-owned status objects, transcribed from kubernaut's own RemediationRequest
//! CRD (descriptions left out), so that installing namegate's CRD over kubernaut's keeps every
//! validation its orchestrator relies on (`docs/reliability.md`, "The CRD keeps kubernaut's
//! validation"; the test `crd-schema/tests/kubernaut_compat.rs` compares the two).

use schemars::{Schema, SchemaGenerator};

fn literal(text: &str) -> Schema {
    serde_json::from_str(text).expect("a schema literal of this module is valid JSON")
}

/// `status.conditions`.
pub fn conditions(_: &mut SchemaGenerator) -> Schema {
    literal(
        r#"{
 "items": {
  "properties": {
   "lastTransitionTime": {
    "format": "date-time",
    "type": "string"
   },
   "message": {
    "maxLength": 32768,
    "type": "string"
   },
   "observedGeneration": {
    "format": "int64",
    "minimum": 0,
    "type": "integer"
   },
   "reason": {
    "maxLength": 1024,
    "minLength": 1,
    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    "type": "string"
   },
   "status": {
    "enum": [
     "True",
     "False",
     "Unknown"
    ],
    "type": "string"
   },
   "type": {
    "maxLength": 316,
    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    "type": "string"
   }
  },
  "required": [
   "lastTransitionTime",
   "message",
   "reason",
   "status",
   "type"
  ],
  "type": "object"
 },
 "type": "array",
 "x-kubernetes-list-map-keys": [
  "type"
 ],
 "x-kubernetes-list-type": "map"
}"#,
    )
}

/// `status.phaseProgress`.
pub fn phase_progress(_: &mut SchemaGenerator) -> Schema {
    literal(
        r#"{
 "properties": {
  "aiAnalysisRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  },
  "analyzingStartTime": {
   "format": "date-time",
   "type": "string"
  },
  "currentProcessingRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  },
  "effectivenessAssessmentRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  },
  "executingStartTime": {
   "format": "date-time",
   "type": "string"
  },
  "processingStartTime": {
   "format": "date-time",
   "type": "string"
  },
  "remediationProcessingRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  },
  "signalProcessingRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  },
  "verificationDeadline": {
   "format": "date-time",
   "type": "string"
  },
  "workflowExecutionRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  }
 },
 "type": "object"
}"#,
    )
}

/// `status.operatorAudit`.
pub fn operator_audit(_: &mut SchemaGenerator) -> Schema {
    literal(
        r#"{
 "properties": {
  "lastModifiedAt": {
   "format": "date-time",
   "type": "string"
  },
  "lastModifiedBy": {
   "type": "string"
  },
  "preRemediationSpecHash": {
   "type": "string",
   "x-kubernetes-validations": [
    {
     "message": "preRemediationSpecHash is immutable once set",
     "rule": "oldSelf == '' || self == oldSelf"
    }
   ]
  }
 },
 "type": "object"
}"#,
    )
}

/// `status.workflowSelection`.
pub fn workflow_selection(_: &mut SchemaGenerator) -> Schema {
    literal(
        r#"{
 "properties": {
  "confidence": {
   "type": "string"
  },
  "executionRef": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "fieldPath": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    },
    "resourceVersion": {
     "type": "string"
    },
    "uid": {
     "type": "string"
    }
   },
   "type": "object",
   "x-kubernetes-map-type": "atomic"
  },
  "remediationTarget": {
   "properties": {
    "apiVersion": {
     "type": "string"
    },
    "kind": {
     "type": "string"
    },
    "name": {
     "type": "string"
    },
    "namespace": {
     "type": "string"
    }
   },
   "required": [
    "kind",
    "name"
   ],
   "type": "object"
  },
  "selectedWorkflowRef": {
   "properties": {
    "executionBundle": {
     "type": "string"
    },
    "executionBundleDigest": {
     "type": "string"
    },
    "version": {
     "type": "string"
    },
    "workflowId": {
     "type": "string"
    }
   },
   "required": [
    "executionBundle",
    "version",
    "workflowId"
   ],
   "type": "object"
  },
  "signalTargetDisplay": {
   "type": "string"
  },
  "targetDisplay": {
   "type": "string"
  },
  "workflowDisplayName": {
   "type": "string"
  }
 },
 "type": "object"
}"#,
    )
}

/// `status.completionStatus.notificationRequestRefs`.
pub fn notification_request_refs(_: &mut SchemaGenerator) -> Schema {
    literal(
        r#"{
 "items": {
  "properties": {
   "apiVersion": {
    "type": "string"
   },
   "fieldPath": {
    "type": "string"
   },
   "kind": {
    "type": "string"
   },
   "name": {
    "type": "string"
   },
   "namespace": {
    "type": "string"
   },
   "resourceVersion": {
    "type": "string"
   },
   "uid": {
    "type": "string"
   }
  },
  "type": "object",
  "x-kubernetes-map-type": "atomic"
 },
 "type": "array"
}"#,
    )
}
