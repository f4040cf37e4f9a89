"""The GraphQL API at /graphql: the platform's data in one query, beside REST.

Resolvers are endpoints like REST's: they authorize against the same permission matrix,
call the same domain services (which go through the tenant scope), and never hold SQL.
"""
