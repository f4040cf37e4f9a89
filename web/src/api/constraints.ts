// Generated from openapi.json by scripts/constraints.mjs (npm run gen:api): do not edit.
export const constraints = {
  "AgentCreate": {
    "description": {
      "maxLength": 2000
    },
    "knowledge_base_ids": {
      "maxItems": 20
    },
    "max_cost_usd": {
      "exclusiveMinimum": 0
    },
    "max_subagents": {
      "minimum": 1,
      "maximum": 100
    },
    "model": {
      "minLength": 1,
      "maxLength": 200
    },
    "name": {
      "minLength": 1,
      "maxLength": 200,
      "pattern": "^[A-Za-z0-9][\\w .-]*$"
    },
    "system_prompt": {
      "maxLength": 20000
    },
    "temperature": {
      "minimum": 0,
      "maximum": 2
    },
    "timeout_s": {
      "minimum": 1,
      "maximum": 86400
    },
    "tools": {
      "maxItems": 20
    }
  },
  "AgentUpdate": {
    "description": {
      "maxLength": 2000
    },
    "knowledge_base_ids": {
      "maxItems": 20
    },
    "max_cost_usd": {
      "exclusiveMinimum": 0
    },
    "max_subagents": {
      "minimum": 1,
      "maximum": 100
    },
    "model": {
      "minLength": 1,
      "maxLength": 200
    },
    "name": {
      "minLength": 1,
      "maxLength": 200,
      "pattern": "^[A-Za-z0-9][\\w .-]*$"
    },
    "system_prompt": {
      "maxLength": 20000
    },
    "temperature": {
      "minimum": 0,
      "maximum": 2
    },
    "timeout_s": {
      "minimum": 1,
      "maximum": 86400
    },
    "tools": {
      "maxItems": 20
    }
  },
  "AlertChannelCreate": {
    "description": {
      "maxLength": 200
    },
    "events": {
      "maxItems": 10
    },
    "target": {
      "minLength": 1,
      "maxLength": 2048
    }
  },
  "AlertChannelUpdate": {
    "description": {
      "maxLength": 200
    },
    "events": {
      "maxItems": 10
    },
    "target": {
      "minLength": 1,
      "maxLength": 2048
    }
  },
  "ApiKeyCreate": {
    "name": {
      "minLength": 1,
      "maxLength": 200
    }
  },
  "BillingSettingsUpdate": {
    "currency": {
      "pattern": "^[A-Z]{3}$"
    }
  },
  "CloseRequest": {
    "period": {
      "pattern": "^\\d{4}-(0[1-9]|1[0-2])$"
    }
  },
  "CreditCreate": {
    "amount_usd": {
      "maximum": 999999999.99,
      "exclusiveMinimum": 0
    },
    "reason": {
      "minLength": 1,
      "maxLength": 300
    }
  },
  "ExecutionCreate": {
    "task": {
      "minLength": 1,
      "maxLength": 50000
    },
    "thread_id": {
      "minLength": 1,
      "maxLength": 200
    }
  },
  "ExecutionOptions": {
    "budget_usd": {
      "exclusiveMinimum": 0
    },
    "deadline_s": {
      "maximum": 86400,
      "exclusiveMinimum": 0
    },
    "max_agents": {
      "minimum": 1,
      "maximum": 100
    }
  },
  "KnowledgeBaseCreate": {
    "chunk_overlap": {
      "minimum": 0,
      "maximum": 2000
    },
    "chunk_size": {
      "minimum": 100,
      "maximum": 8000
    },
    "description": {
      "maxLength": 2000
    },
    "embedding_model": {
      "minLength": 1,
      "maxLength": 200
    },
    "name": {
      "minLength": 1,
      "maxLength": 200
    }
  },
  "LimitsUpdate": {
    "key_rpm": {
      "minimum": 1,
      "maximum": 2147483647
    },
    "key_tpm": {
      "minimum": 1,
      "maximum": 2147483647
    },
    "monthly_budget_usd": {
      "minimum": 0
    },
    "soft_limit_ratio": {
      "maximum": 1,
      "exclusiveMinimum": 0
    },
    "tenant_rpm": {
      "minimum": 1,
      "maximum": 2147483647
    },
    "tenant_tpm": {
      "minimum": 1,
      "maximum": 2147483647
    }
  },
  "LoginRequest": {
    "password": {
      "minLength": 1,
      "maxLength": 1024
    }
  },
  "LogoutRequest": {
    "refresh_token": {
      "maxLength": 512
    }
  },
  "MemberCreate": {
    "name": {
      "maxLength": 200
    },
    "password": {
      "minLength": 10,
      "maxLength": 1024
    }
  },
  "OIDCCodeRequest": {
    "code": {
      "minLength": 1,
      "maxLength": 4096
    },
    "code_verifier": {
      "minLength": 43,
      "maxLength": 128,
      "pattern": "^[A-Za-z0-9._~-]+$"
    },
    "nonce": {
      "minLength": 16,
      "maxLength": 256
    },
    "redirect_uri": {
      "minLength": 1,
      "maxLength": 2048,
      "pattern": "^https?://"
    }
  },
  "OIDCLoginRequest": {
    "id_token": {
      "minLength": 1,
      "maxLength": 16384
    }
  },
  "PlanCreate": {
    "concurrent_executions": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "description": {
      "maxLength": 2000
    },
    "included_spend_usd": {
      "minimum": 0,
      "maximum": 999999999999.99
    },
    "included_tokens": {
      "minimum": 0,
      "maximum": 9007199254740992
    },
    "key": {
      "minLength": 1,
      "maxLength": 40,
      "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"
    },
    "knowledge_bases": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "ledger_retention_days": {
      "minimum": 1,
      "maximum": 36500
    },
    "markup_pct": {
      "minimum": 0,
      "maximum": 1000
    },
    "max_subagents": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "monthly_fee_usd": {
      "minimum": 0,
      "maximum": 999999999999.99
    },
    "name": {
      "minLength": 1,
      "maxLength": 100
    },
    "requests_per_minute": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "seats": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "storage_bytes": {
      "minimum": 0,
      "maximum": 9007199254740992
    },
    "stripe_price_id": {
      "maxLength": 255,
      "pattern": "^price_[A-Za-z0-9_]{1,250}$"
    },
    "tokens_per_minute": {
      "minimum": 0,
      "maximum": 2147483647
    }
  },
  "PlanUpdate": {
    "concurrent_executions": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "description": {
      "maxLength": 2000
    },
    "included_spend_usd": {
      "minimum": 0,
      "maximum": 999999999999.99
    },
    "included_tokens": {
      "minimum": 0,
      "maximum": 9007199254740992
    },
    "knowledge_bases": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "ledger_retention_days": {
      "minimum": 1,
      "maximum": 36500
    },
    "markup_pct": {
      "minimum": 0,
      "maximum": 1000
    },
    "max_subagents": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "monthly_fee_usd": {
      "minimum": 0,
      "maximum": 999999999999.99
    },
    "name": {
      "minLength": 1,
      "maxLength": 100
    },
    "requests_per_minute": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "seats": {
      "minimum": 0,
      "maximum": 2147483647
    },
    "storage_bytes": {
      "minimum": 0,
      "maximum": 9007199254740992
    },
    "stripe_price_id": {
      "maxLength": 255,
      "pattern": "^price_[A-Za-z0-9_]{1,250}$"
    },
    "tokens_per_minute": {
      "minimum": 0,
      "maximum": 2147483647
    }
  },
  "RefreshRequest": {
    "refresh_token": {
      "minLength": 1,
      "maxLength": 512
    }
  },
  "SearchFilters": {
    "document_ids": {
      "maxItems": 100
    }
  },
  "SearchRequest": {
    "query": {
      "minLength": 1,
      "maxLength": 4000
    },
    "top_k": {
      "minimum": 1,
      "maximum": 50
    }
  },
  "TenantCreate": {
    "admin_password": {
      "minLength": 10,
      "maxLength": 1024
    },
    "name": {
      "minLength": 1,
      "maxLength": 200
    },
    "oidc_tenant_id": {
      "minLength": 1,
      "maxLength": 200
    },
    "plan": {
      "minLength": 1,
      "maxLength": 40
    }
  },
  "TenantUpdate": {
    "name": {
      "minLength": 1,
      "maxLength": 200
    },
    "oidc_tenant_id": {
      "minLength": 1,
      "maxLength": 200
    },
    "plan": {
      "minLength": 1,
      "maxLength": 40
    }
  }
} as const;

export const enums = {
  "BreakerState": [
    "closed",
    "open",
    "half_open"
  ],
  "ExecutionState": [
    "queued",
    "decomposing",
    "running",
    "synthesizing",
    "succeeded",
    "failed",
    "cancelled",
    "budget_exceeded",
    "timed_out"
  ],
  "FinishedExecutionState": [
    "succeeded",
    "failed",
    "cancelled",
    "budget_exceeded",
    "timed_out"
  ],
  "Permission": [
    "self",
    "invitations:respond",
    "tenants:manage",
    "members:read",
    "members:write",
    "api_keys:read",
    "api_keys:write",
    "audit:read",
    "agents:read",
    "agents:write",
    "executions:read",
    "executions:run",
    "gateway:call",
    "knowledge:read",
    "knowledge:write",
    "usage:read",
    "budgets:write",
    "providers:read",
    "billing:read",
    "billing:write",
    "plans:manage",
    "alerts:manage",
    "privacy:manage"
  ],
  "Phase": [
    "decompose",
    "subagents",
    "synthesize"
  ],
  "Role": [
    "super_admin",
    "tenant_admin",
    "developer",
    "viewer",
    "billing_admin"
  ],
  "SubtaskStatus": [
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cancelled"
  ],
  "TenantStatus": [
    "active",
    "suspended"
  ],
  "UsageBucket": [
    "day"
  ],
  "UsageDimension": [
    "day",
    "model",
    "provider",
    "route",
    "api_key",
    "agent"
  ]
} as const;
