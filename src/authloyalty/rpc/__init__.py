"""Generated from proto/ by scripts/gen_proto.sh. DO NOT EDIT: change the .proto and rerun it.

Modules: registration.v1.registration_pb2, session.v1.session_pb2, account.v1.account_pb2,
sso.sso_pb2, sso.sso_pb2_grpc.
"""
